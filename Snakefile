# semiseg3d - the pipeline, as a table of contents.
#
#   data      raw or released data -> data/processed/{dataset} -> data/splits/{dataset}/r{ratio}
#   train     one config and one run per grid point -> results/runs/{dataset}/{variant}/r{ratio}/s{seed}
#   evaluate  sliding-window predictions + metrics.csv per run
#   report    tables, figures and the HTML bundle -> reports/
#
# Parameters: params.yaml (+ overlays given with --configfile), checked against
# workflow/schemas/params.schema.yaml before anything runs. Every key: README.md, "params.yaml reference".
# How-tos (demo, dvc repro, SLURM, LA at reduced scale): docs/pipeline.md.
#
#   snakemake --cores all --resources gpu=1                      # the paper grid
#   snakemake --cores all --resources gpu=1 --configfile config/demo.yaml
#   snakemake --report reports/report.html --configfile config/demo.yaml


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# targets and tiny bookkeeping jobs run in the Snakemake process, never as cluster jobs
localrules:
    all,
    data,
    train,
    evaluate,
    report,
    run_config,
    split,


rule all:
    """Everything: the report phase and all it needs."""
    input:
        REPORT_OUTPUTS,


rule data:
    """Data phase: every preprocessed dataset and split the grid needs."""
    input:
        expand(PROCESSED, dataset=DATASETS),
        split_paths("train.list"),


rule train:
    """Train phase: every run of the grid."""
    input:
        run_paths(f"{RUN}/model_final.pt"),


rule evaluate:
    """Evaluate phase: metrics.csv of every run."""
    input:
        run_paths(f"{RUN}/metrics.csv"),


rule report:
    """Report phase: tables, figures and curves under reports/."""
    input:
        REPORT_OUTPUTS,
