# Train phase: one resolved config per grid point, then one training run per config.


rule run_config:
    """The validated TrainConfig of one grid point (params.yaml + overlays + split lists)."""
    input:
        labeled=f"{SPLIT}/labeled.list",
        unlabeled=f"{SPLIT}/unlabeled.list",
        train=f"{SPLIT}/train.list",
        test=f"{SPLIT}/test.list",
    output:
        config=RUN_CONFIG,
    log:
        f"{LOGS}/run_config/{{dataset}}/{{variant}}/r{{ratio}}/s{{seed}}.log",
    conda:
        "../envs/semiseg3d.yaml"
    params:
        # the resolved settings: when they change, this config (and the run) is redone
        settings=run_settings,
        overlays=OVERLAY_ARGS,
        params_file=PARAMS_FILE,
        split=lambda w, input: os.path.dirname(input.labeled),
        data=lambda w: PROCESSED.format(dataset=w.dataset),
    shell:
        "semiseg3d run-config --params {params.params_file} {params.overlays} "
        "--dataset {wildcards.dataset} --ratio {wildcards.ratio} "
        "--variant {wildcards.variant} --seed {wildcards.seed} "
        "--data-dir {params.data} --split {params.split} "
        "--out {output.config} > {log} 2>&1"


rule train_run:
    """Train one run into its run folder; an interrupted run resumes from its checkpoint.

    A run folder older than its inputs (the config or the data changed) is cleared first,
    so a rerun that Snakemake asks for never resumes a stale checkpoint.
    """
    input:
        config=RUN_CONFIG,
        data=PROCESSED,
        train=f"{SPLIT}/train.list",
    output:
        model=f"{RUN}/model_final.pt",
    log:
        f"{LOGS}/train/{{dataset}}/{{variant}}/r{{ratio}}/s{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{dataset}}/{{variant}}/r{{ratio}}/s{{seed}}.tsv"
    conda:
        "../envs/semiseg3d.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        run=lambda w, output: os.path.dirname(output.model),
    shell:
        "run={params.run}; "
        'if [ -e "$run/config.yaml" ] && [ -n "$(find {input.config} {input.data} '
        '{input.train} -maxdepth 0 -newer "$run/config.yaml")" ]; then '
        'rm -rf "$run"; echo "cleared stale run folder $run"; fi > {log} 2>&1; '
        'echo "host=$(hostname) slurm_job_id=${{SLURM_JOB_ID:-none}} '
        'cuda_visible_devices=${{CUDA_VISIBLE_DEVICES:-}}" >> {log}; '
        "OMP_NUM_THREADS={threads} semiseg3d train --config {input.config} --out $run "
        "--progress off >> {log} 2>&1"
