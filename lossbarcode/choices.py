"""The names an experiment can choose from and its defaults, without importing the engine.

The config's validation and defaults, the command line, the dashboard's widgets and the cost
model read these; the modules that implement them (``data``, ``models``, ``minima``,
``paths``, all importing torch) re-export them or take their argument defaults from them, so
there is one list and one default of each.
"""

TASKS = ("classification", "regression", "sequence")
EMBEDDED_DATASETS = ("digits", "spirals", "blobs", "teacher", "modadd")
# Generated offline by a Python package that may be absent (lossbarcode.datafiles says how to
# get it): MNIST-1D, 1-D signals of length 40 (pip install mnist1d).
PACKAGE_DATASETS = ("mnist1d",)
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")
DATASETS: tuple[str, ...] = (*EMBEDDED_DATASETS, *PACKAGE_DATASETS, "text",
                             *TORCHVISION_DATASETS)
SEQUENCE_DATASETS = ("modadd", "text")  # token sequences: the transformer's tasks
VECTOR_DATASETS = ("spirals", "blobs", "teacher")  # synthetic vectors, any size, no images
ARCHS: tuple[str, ...] = ("fcn", "cnn", "resnet", "transformer")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "anneal")
PATH_METHODS = ("linear", "neb", "bezier", "string")
PAIRINGS = ("all", "mst")
EXECUTORS = ("local", "ray", "submitit")  # where a sweep's runs are computed (lossbarcode.sweep)

# Defaults shared by ExperimentConfig and the public functions that take the same setting.
DATASET = "digits"
# Every numeric knob has an upper bound next to its default (*_MAX; FIELD_MAX collects them
# per config field for the config's validation): far above any sensible run, low enough that
# a typo (1e9 for 1e3) is refused at once instead of running for ever.
ARCH, WIDTH, DEPTH = "fcn", 32, 2
WIDTH_MAX, DEPTH_MAX = 2**16, 256  # the paper's widest network: 2048 units
HEADS = 4  # transformer attention heads
HEADS_MAX = 256
K = 8  # minima per run
K_MAX = 1024  # the paper: 32; pairs 'all' joins K(K-1)/2 pairs
N_EXAMPLES_MAX = 10**7  # n_train, n_test, eval_subset (the largest built-in set: 73,257)
SEED_MAX = 2**32 - 1  # the largest run seed (numpy and torch take seeds up to 2**32 - 1 alike)
OPTIMIZER = "sgd"
SCHEDULE = "constant"
MINIMA_STEPS = 2000  # training steps per network
MINIMA_STEPS_MAX = 10**7
BATCH_SIZE = 64  # training examples per minibatch step of the minima
BATCH_SIZE_MAX = N_EXAMPLES_MAX
POLISH_STEPS = 500  # full-batch L-BFGS iterations per network at most (the phase's cap)
POLISH_STEPS_MAX = 10**5
LR_MAX = 100.0  # lr and path_lr: a larger step diverges on any loss we compute
# Per built-in family: (optimizer, learning rate, steps) of the minibatch phase and the cap
# on full-batch iterations (read through training() below; measured by
# ``lossbarcode bench minima``).
TRAINING: dict[str, tuple[str, float, int, int]] = {
    "fcn": ("adam", 3e-3, 2000, 2000),
    "cnn": ("sgd", 0.05, 2000, 500),
    "resnet": ("sgd", 0.05, 2000, 500),
    "transformer": ("adam", 1e-3, 2000, 500),
}


def training(arch: str | None, optimizer: str | None = None, lr: float | None = None,
             steps: int | None = None, polish_steps: int | None = None
             ) -> tuple[str, float, int, int]:
    """``(optimizer, lr, steps, polish_steps)`` with each ``None`` replaced by its default for
    the family ``arch`` (:data:`TRAINING`; another family or ``None``, a user's model: the
    generic :data:`OPTIMIZER`, ``MINIMA_LR``, :data:`MINIMA_STEPS`, :data:`POLISH_STEPS`).
    A default learning rate is the family's for the family's optimizer, else
    ``MINIMA_LR[optimizer]``. The one rule: the config's run id and ``find_minima`` read it."""
    family = TRAINING.get(arch or "", (OPTIMIZER, MINIMA_LR[OPTIMIZER], MINIMA_STEPS,
                                       POLISH_STEPS))
    optimizer = family[0] if optimizer is None else optimizer
    if lr is None:
        lr = family[1] if optimizer == family[0] else MINIMA_LR.get(optimizer, family[1])
    return (optimizer, lr, family[2] if steps is None else steps,
            family[3] if polish_steps is None else polish_steps)


# When a trained network is a minimum (lossbarcode.certificates.certify): its full-batch gradient
# norm (of the mean training loss) is at most MINIMA_TOL, its smallest Hessian eigenvalue at
# least -MINIMA_TOL, and its loss at most STUCK_RATIO times its loss at initialisation (for a
# loss >= 0; generally: at least (1 - STUCK_RATIO) * |initial| below it), else it is "stuck".
MINIMA_TOL = 1e-3
MINIMA_TOL_MAX = 1.0  # a larger tolerance would certify almost any point
STUCK_RATIO = 0.9
LANCZOS_ITERS = 50  # Hessian-vector products per minimum for its smallest eigenvalue
LBFGS_MEMORY = 10  # (s, y) pairs the full-batch L-BFGS phase keeps per network
SADDLE_ROUNDS = 2  # escapes from a saddle (step along negative curvature, descend again)
# Re-basin (lossbarcode.rebasin): the families whose hidden-unit permutations it knows, and
# the most coordinate-descent sweeps of weight matching (it stops earlier, when no
# permutation changes; measured: 2-5 sweeps on digits fcn/cnn).
ALIGN_ARCHS = ("fcn", "cnn")
ALIGN = False  # align every minimum to a reference before the paths
ALIGN_MAX_SWEEPS = 100
PATH_METHOD = "neb"
PAIRING = "mst"
DTYPE = "float32"  # the torch dtype's name

# The path stopping rule (lossbarcode.paths.connect), read by the config, the CLI help, the
# dashboard and the cost model. PATHS_VERSION names the path algorithm and is part of every
# run id: 1 = a fixed step budget (before Dec 2026), 2 = paths optimised until converged,
# 3 = step-scaled springs, stalls, maximised tops, critical tops, restarts, planned pairs,
# 4 = the string method re-solves every deciding pair NEB could not converge.
PATHS_VERSION = 4
PATH_TOL = 0.05  # a cycle may lower the barrier by at most this share of the segment ...
PATH_ATOL = 1e-4  # ... plus this many loss units (the resolution floor of a barrier)
PATH_MAX_STEPS = 4000  # minibatch steps per path at most
PATH_STEPS_MAX = 10**6  # path_max_steps and a fixed budget path_steps at most
PATH_FINAL_STEPS = 2000  # full-batch (climbing-image) steps per path at most
PATH_CYCLE_STEPS = 50  # minibatch steps between two convergence checks
PATH_STALL = 2.0**-8  # a path whose step size falls below this share of its first is stalled
PATH_RESTARTS = 3  # starts per deciding pair (the straight line and R - 1 others)
PATH_RESTARTS_MAX = 10
# A profile's top is maximised by a golden-section search of this many steps on the two
# highest local maxima of the dense profile (0.618^30: 5e-7 of a sample interval).
PATH_GOLDEN_STEPS, PATH_GOLDEN_PEAKS = 30, 2
# Tolerances above these would certify anything: the config refuses them.
PATH_TOL_MAX, PATH_ATOL_MAX = 1.0, 0.1
PATH_IMAGES = 6
PATH_IMAGES_MAX = 256
PATH_EVAL_POINTS = 3
PATH_EVAL_POINTS_MAX = 256
# The largest value of each bounded integer config field (restarts and seed included), read by
# the config's validation ("--polish-steps must be at most ...").
FIELD_MAX: dict[str, int] = {
    "n_train": N_EXAMPLES_MAX, "n_test": N_EXAMPLES_MAX, "eval_subset": N_EXAMPLES_MAX,
    "width": WIDTH_MAX, "depth": DEPTH_MAX, "heads": HEADS_MAX, "k": K_MAX,
    "steps": MINIMA_STEPS_MAX, "batch_size": BATCH_SIZE_MAX, "polish_steps": POLISH_STEPS_MAX,
    "images": PATH_IMAGES_MAX, "path_steps": PATH_STEPS_MAX, "path_max_steps": PATH_STEPS_MAX,
    "restarts": PATH_RESTARTS_MAX, "eval_points": PATH_EVAL_POINTS_MAX, "seed": SEED_MAX,
}
# A run (or sweep, or reproduction) the cost model expects to take longer than this is
# refused on the command line unless --yes is given.
CONFIRM_BEYOND_S = 24 * 3600.0
# connect()'s remaining defaults, also read by the cost model (not config fields).
PATH_BATCH_SIZE = 128  # training examples per NEB / Bezier minibatch step
NEB_CYCLES, NEB_INSERT = 3, 2  # fixed budget: AutoNEB cycles; images inserted per cycle
NEB_TOP_INSERTS = 12  # images NEB's full-batch phase may insert at path tops between images
BEZIER_T_SAMPLES = 4  # curve points per pair per Bezier step
SCREEN_POINTS = 9  # points per straight segment when "mst" ranks all pairs
MINIMA_LR = {"sgd": 0.05, "adam": 1e-3}  # default training learning rate per optimizer
PATH_LR = {"sgd": 0.05, "adam": 0.01}  # default (initial) path step size per optimizer
# Per path method (the string method chooses its own steps: lossbarcode.string_method).
PATH_OPTIMIZER = {"linear": "sgd", "neb": "sgd", "bezier": "adam", "string": "sgd"}

# The views a stored run opens on (lossbarcode.maps, lossbarcode.slices): the Minima map and
# Landscape slice pages' default widgets, the library functions' defaults, and what
# ``lossbarcode views`` makes ahead of time (the shipped demo runs carry them, so a first open
# computes nothing). Minima map: the projection methods (the first is the default), the
# dimension and the projection seed; the page shows the MAP_INTERIM method's map (the same
# dim and seed) while the default one is computed (UMAP compiles for 15-35 s on first use).
MAP_METHODS = ("auto", "umap", "pca")
MAP_METHOD, MAP_DIM, MAP_SEED = MAP_METHODS[0], 2, 0
MAP_INTERIM = "pca"
# Landscape slice: grid points per axis offered (and the default), the margin around the
# three minima (a fraction of their bounding box's larger side); the plane goes through the
# first three non-diverged minima (lossbarcode.slices.default_minima).
SLICE_RESOLUTIONS = (21, 31, 41, 61, 81)
SLICE_RESOLUTION = 41
SLICE_MARGIN = 0.25

# What lossbarcode reads back (lossbarcode.store): regular files only, opened without
# blocking and without following links, at most this many bytes each; JSON nested at most
# MAX_JSON_DEPTH deep (a result nests 6 deep). Anything else is refused, per file.
MAX_JSON_BYTES = 256 * 2**20  # a stage's JSON record, a sweep file
MAX_ARRAYS_BYTES = 16 * 2**30  # a stage's .npz (K parameter vectors, path images)
MAX_CONFIG_BYTES = 2**20  # a config file (JSON or TOML)
MAX_LOCK_INFO_BYTES = 2**16  # the side file naming a lock's holder
MAX_JSON_DEPTH = 64
MAX_DEMO_COPY_BYTES = 2**30  # the dashboard's private copy of the demo runs, all files together

# The dashboard's presets, also measured by ``lossbarcode bench estimate``: name -> (label,
# config fields that differ from the default ExperimentConfig).
PRESETS: dict[str, tuple[str, dict]] = {
    "default": (f"Default: {DATASET}, {ARCH} {WIDTH}×{DEPTH}, K = {K}", {}),
    "tiny": ("Tiny smoke test (a few seconds)",
             {"n_train": 200, "n_test": 100, "width": 8, "depth": 1, "k": 4, "steps": 300,
              "batch_size": 32, "images": 2, "path_max_steps": 200, "eval_points": 2,
              "device": "cpu"}),
    "wide": (f"Wide: {ARCH} 128×{DEPTH}", {"width": 128}),
    "deep": (f"Deep: {ARCH} {WIDTH}×4", {"depth": 4}),
    "annealed": ("Annealed learning rate", {"schedule": "anneal"}),
    "spirals": ("Spirals, fcn 16×2, K = 10", {"dataset": "spirals", "width": 16, "k": 10}),
}

# What each dataset is, for the cost and memory model (no data is loaded): input shape of one
# example, outputs, and the full train / test sizes. Synthetic sets are generated at n_train /
# n_test, SYNTHETIC_N each by default; the text vocabulary is a guess.
SYNTHETIC_N = 512
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int, int, int]] = {
    "digits": ((1, 8, 8), 10, 1438, 359),
    "spirals": ((2,), 2, SYNTHETIC_N, SYNTHETIC_N),
    "blobs": ((2,), 4, SYNTHETIC_N, SYNTHETIC_N),
    "teacher": ((8,), 1, SYNTHETIC_N, SYNTHETIC_N),
    "modadd": ((3,), 24, 264, 265),
    "mnist1d": ((1, 40), 10, 4000, 1000),  # one channel of length 40 (a 1-D signal)
    "text": ((32,), 96, 4096, 1024),
    "mnist": ((1, 28, 28), 10, 60000, 10000),
    "fashion_mnist": ((1, 28, 28), 10, 60000, 10000),
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
    "cifar100": ((3, 32, 32), 100, 50000, 10000),
    "svhn": ((3, 32, 32), 10, 73257, 26032),
}


def train_examples_at_most(dataset: str, n_train: int | None) -> int | None:
    """The most training examples a config of ``dataset`` can have, without loading it:
    ``n_train`` when given (a larger request than the data holds is refused on load), else
    the dataset's full training split (:data:`DATASET_SHAPES`; for ``text`` the cap on its
    windows); None for a dataset not listed. The run id's rule "an ``eval_subset`` that
    covers every training example is no subset" reads it."""
    if n_train is not None:
        return n_train
    shape = DATASET_SHAPES.get(dataset)
    return None if shape is None else shape[2]


# ``lossbarcode reproduce``: per scale, the minima per run, the seeds, the training examples at
# most (None: the dataset's own split; a smaller dataset keeps its own), and per family the
# width curve (widths at ``depth``) and the depth curve (depths at ``width``, narrow enough
# that bars are non-zero). "cpu" on digits/fcn is the shipped demo sweep, run for run.
REPRODUCE_SCALES: dict[str, dict] = {
    "tiny": {"k": 4, "seeds": (0, 1), "n_train": 256, "n_test": 128, "axes": {
        "fcn": {"widths": (8, 16, 32), "depth": 1, "depths": (1, 2, 3), "width": 8},
        "cnn": {"widths": (4, 8, 16), "depth": 1, "depths": (1, 2, 3), "width": 4},
        "transformer": {"widths": (16, 32, 64), "depth": 1, "depths": (1, 2, 3), "width": 16},
    }},
    "cpu": {"k": K, "seeds": (0, 1, 2), "n_train": 1500, "n_test": 500, "axes": {
        "fcn": {"widths": (4, 8, 16, 32, 64, 128, 256), "depth": 2, "depths": (1, 2, 3, 4),
                "width": 8},
        "cnn": {"widths": (4, 8, 16), "depth": 2, "depths": (1, 2, 3), "width": 4},
        "transformer": {"widths": (16, 32, 64), "depth": 1, "depths": (1, 2, 3), "width": 16},
    }},
    "gpu": {"k": 16, "seeds": (0, 1, 2, 3, 4), "n_train": None, "n_test": None, "axes": {
        "fcn": {"widths": (4, 8, 16, 32, 64, 128, 256, 512, 1024), "depth": 2,
                "depths": (1, 2, 3, 4, 5, 6), "width": 8},
        "cnn": {"widths": (4, 8, 16, 32, 64), "depth": 2, "depths": (1, 2, 3, 4), "width": 8},
        "transformer": {"widths": (16, 32, 64, 128), "depth": 1, "depths": (1, 2, 3, 4),
                        "width": 32},
    }},
    "paper": {"k": 32, "seeds": tuple(range(10)), "n_train": None, "n_test": None, "axes": {
        "fcn": {"widths": (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), "depth": 2,
                "depths": (1, 2, 3, 4, 5, 6), "width": 8},
        "cnn": {"widths": (4, 8, 16, 32, 64, 128), "depth": 2, "depths": (1, 2, 3, 4, 5, 6),
                "width": 8},
        "transformer": {"widths": (16, 32, 64, 128, 256), "depth": 1,
                        "depths": (1, 2, 3, 4, 5, 6), "width": 32},
    }},
}
REPRODUCE_SCALE = "cpu"
REPRODUCE_ARCHS = ("fcn", "cnn", "transformer")
REPRODUCE_DATASETS = ("digits", "fashion_mnist", "mnist1d")
REPRODUCE_SEQUENCE_DATASET = "modadd"  # the transformer's task whatever --datasets says
