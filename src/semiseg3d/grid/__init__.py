"""The experiment grid and where every phase writes: :mod:`.layout` (the folder layout,
shared by ``workflow/rules/common.smk``, ``semiseg3d run-config`` and the report) and
:mod:`.run_config` (``params.yaml`` -> the grid -> one run's config)."""
