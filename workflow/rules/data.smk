# Data phase: raw or released data -> data/processed/{dataset} -> data/splits/{dataset}/r{ratio}.
#
# One rule per kind of source (data.<dataset>.source in params.yaml); the wildcard
# constraints send each dataset to its rule.


rule fetch:
    """The LA preprocessed release: downloaded, or copied from data.<dataset>.local; SHA-256 checked."""
    output:
        data=directory(PROCESSED),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names_with_source("fetch"),
    conda:
        "../envs/semiseg3d.yaml"
    params:
        args=fetch_args,
    shell:
        "semiseg3d fetch {params.args} --out {output.data} > {log} 2>&1"


rule convert:
    """A raw dataset (LA raw, Pancreas-CT, BraTS-2019, own data) converted to h5."""
    output:
        data=directory(PROCESSED),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names_with_source("convert"),
    conda:
        "../envs/semiseg3d.yaml"
    params:
        args=convert_args,
    shell:
        "semiseg3d convert {params.args} --out {output.data} > {log} 2>&1"


rule synth:
    """The synthetic demo dataset, generated (deterministic by seed)."""
    output:
        data=directory(PROCESSED),
    log:
        f"{LOGS}/data/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names_with_source("synth"),
    conda:
        "../envs/semiseg3d.yaml"
    params:
        args=synth_args,
    shell:
        "semiseg3d synth --out {output.data} {params.args} > {log} 2>&1"


rule split:
    """Labeled / unlabeled / test lists for one label ratio; train.list = labeled + unlabeled."""
    input:
        data=PROCESSED,
    output:
        labeled=f"{SPLIT}/labeled.list",
        unlabeled=f"{SPLIT}/unlabeled.list",
        train=f"{SPLIT}/train.list",
        test=f"{SPLIT}/test.list",
    log:
        f"{LOGS}/split/{{dataset}}/r{{ratio}}.log",
    conda:
        "../envs/semiseg3d.yaml"
    params:
        how=split_how,
        out=lambda w, output: os.path.dirname(output.labeled),
    shell:
        "semiseg3d split --data {input.data} {params.how} --out {params.out} > {log} 2>&1 "
        "&& cat {output.labeled} {output.unlabeled} > {output.train}"
