"""vadcore: the library behind vad-sweeps — data, models, training, scoring and evaluation of one trial.

Importing it is cheap and imports no Ray, Optuna or DeepSpeed; those live at the edges (`sweeps/`,
`vadcore.train`). Entry points: `python -m vadcore --help`, `vadcore.pipeline.run_trial`.
"""

__version__ = "0.1.0"
