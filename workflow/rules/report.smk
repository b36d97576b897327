# Report phase: the paper's tables and figures from every run (semiseg3d report).
#
# Everything written here is flagged for `snakemake --report reports/report.html`, which
# bundles it (with the per-run metrics of the evaluate phase) into one HTML file.

REPORT_OUTPUTS = ["reports/summary.md", "reports/runs_index.csv"]


rule build_report:
    """Tables 1-7 (Markdown, LaTeX, CSV), Figure 8, qualitative figures, training curves."""
    input:
        metrics=run_paths(f"{RUN}/metrics.csv"),
        data=expand(PROCESSED, dataset=DATASETS),
    output:
        tables=report(
            directory("reports/tables"),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory("reports/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
        index=report(
            "reports/runs_index.csv",
            caption="../report/runs_index.rst",
            category="Summary",
        ),
        summary=report(
            "reports/summary.md", caption="../report/summary.rst", category="Summary"
        ),
    log:
        f"{LOGS}/report.log",
    conda:
        "../envs/semiseg3d.yaml"
    params:
        overlays=OVERLAY_ARGS,
        params_file=PARAMS_FILE,
        results=lambda w, input: RUNS_ROOT,
        out=lambda w, output: os.path.dirname(output.summary),
    shell:
        "semiseg3d report --results {params.results} --out {params.out} "
        "--params {params.params_file} {params.overlays} --data-root data/processed "
        "> {log} 2>&1"
