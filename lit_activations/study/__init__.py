"""``python -m lit_activations compare``: the activation study, many runs -> one table and one figure.

A study's cells are its (activation, seed) pairs in each setting of its grid; each cell is an
ordinary run in its own directory ``<study_dir>/<setting>/<activation>/seed_<s>``. By default the
cells are trained as members of as few fits as ``--jobs`` allows (``lit_activations.members``): one
fit per job, the cells split evenly, so a Lightning step does the work of many runs.
``--vectorize=false`` runs one fit per cell instead. Either way each fit is an ordinary ``fit``
through the same command line, in a process of its own, forked from a server that has imported
Lightning once (multiprocessing's "forkserver"), so it starts in a fraction of a second instead of
the 5 s of a new interpreter; with ``--launcher ray`` each fit is a Ray task instead, and nothing
else changes. The fits' own directories (``config.yaml``, the checkpoints that resume them) are
under ``<study_dir>/fits``.

The seed is ``--seed_everything`` of the cell's single fit (initialisation); the data stay those of
``--data.seed``. Every other argument goes to each fit unchanged, e.g. ``--config
configs/tutorial.yaml``. Afterwards the runs are read back from their event files into
``results.md``, ``results.csv`` and ``comparison.png`` in the study directory. A fit that fails is
retried one cell per fit, so a failing cell is reported on its own and the others go on. A cell
that finished before is not run again if its ``config.yaml`` is what the cell would now be trained
with; a changed setting is a one-line error naming it (``--fresh`` trains the cells again).

One study writes in a study directory at a time (``lit_activations.lock``). Ctrl-C, SIGTERM and SIGHUP
stop the study and its fits; a fit also ends when the study's own process is killed outright.

The modules, in the order a study uses them:

- ``command``: ``compare_main``: parse -> plan -> run -> report;
- ``checks``: each setting's fit built once, without training, as ``fit`` would build it;
- ``cells``: the grid's cells, what finished before, and how cells are grouped into fits;
- ``fits``: the fits run a few at a time, a failed fit retried cell by cell;
- ``launcher``, ``local``, ``ray_cluster``: where a fit runs; they know nothing of the study;
- ``report``: the runs read back into a table, a CSV and a figure.
"""
