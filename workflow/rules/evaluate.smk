# Evaluate phase: sliding-window predictions on the test list and metrics.csv per run.

# metrics.csv -> its summary rows (mean, sd, sem) as YAML, which `dvc metrics show` reads
SUMMARY_AWK = (
    "NR == 1 { for (i = 2; i <= NF; i++) h[i] = $i; next } "
    '$1 == "mean" || $1 == "sd" || $1 == "sem" { print $1 ":"; '
    'for (i = 2; i <= NF; i++) if ($i != "") print "  " h[i] ": " $i }'
)


rule test_run:
    """Predict the test list of a trained run and score it (run folder metrics.csv).

    The summary rows are also written as YAML under results/metrics/, the evaluate phase's
    own output folder (the DVC `evaluate` stage's metrics).
    """
    input:
        model=f"{RUN}/model_final.pt",
        data=PROCESSED,
        test=f"{SPLIT}/test.list",
    output:
        metrics=report(
            f"{RUN}/metrics.csv",
            caption="../report/metrics.rst",
            category="Run metrics",
            subcategory="{dataset}",
            labels={"variant": "{variant}", "ratio": "{ratio}", "seed": "{seed}"},
        ),
        predictions=directory(f"{RUN}/predictions"),
        summary=RUN_SUMMARY,
    log:
        f"{LOGS}/test/{{dataset}}/{{variant}}/r{{ratio}}/s{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/test/{{dataset}}/{{variant}}/r{{ratio}}/s{{seed}}.tsv"
    conda:
        "../envs/semiseg3d.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        run=lambda w, input: os.path.dirname(input.model),
        summary=SUMMARY_AWK,
    shell:
        "OMP_NUM_THREADS={threads} semiseg3d test --run {params.run} > {log} 2>&1 "
        "&& awk -F, {params.summary:q} {output.metrics} > {output.summary}"
