# Evaluate phase: sliding-window predictions on the test list and metrics.csv per run.


rule test_run:
    """Predict the test list of a trained run and score it (run folder metrics.csv).

    The per-run metrics are also copied under results/metrics/, the evaluate phase's own
    output folder (what the DVC `evaluate` stage tracks).
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
        summary="results/metrics/{dataset}/{variant}/r{ratio}/s{seed}.csv",
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
    shell:
        "OMP_NUM_THREADS={threads} semiseg3d test --run {params.run} > {log} 2>&1 "
        "&& cp {output.metrics} {output.summary}"
