# Report phase: the paper's tables and figures from every run's metrics.

REPORT_DIR = "reports"
REPORT_OUTPUTS = [f"{REPORT_DIR}/summary.csv"]


rule build_report:
    """Tables 1-7 (Markdown, LaTeX, CSV), Figure 8, training curves, qualitative figures."""
    input:
        metrics=run_paths(f"{RUN}/metrics.csv"),
    output:
        summary=f"{REPORT_DIR}/summary.csv",
    log:
        f"{LOGS}/report.log",
    params:
        overlays=overlay_args,
        params_file=PARAMS_FILE,
    shell:
        "semiseg3d report --runs results/runs --params {params.params_file} {params.overlays} "
        "--out {REPORT_DIR} > {log} 2>&1"
