"""Where the work runs: here, or as Slurm jobs through submitit.

* :mod:`~vadpipe.distribute.executors` -- local and Slurm executors behind one interface;
* :mod:`~vadpipe.distribute.featurize_array` -- featurize as one task per manifest shard;
* :mod:`~vadpipe.distribute.train_job` -- a head's training as one job;
* :mod:`~vadpipe.distribute.sbatch` -- a job array as a plain sbatch script.

Nothing here knows the command line's flags: the CLI builds the commands.
"""
