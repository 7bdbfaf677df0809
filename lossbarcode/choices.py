"""The names an experiment can choose from, without importing the engine.

The config's validation, the command line and the dashboard's widgets read these; the modules
that implement them (``data``, ``models``, ``minima``, ``paths``, all importing torch) re-export
them, so there is one list of each.
"""

TASKS = ("classification", "regression", "sequence")
EMBEDDED_DATASETS = ("digits", "spirals", "blobs", "teacher", "modadd")
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")
DATASETS: tuple[str, ...] = (*EMBEDDED_DATASETS, "text", *TORCHVISION_DATASETS)
SEQUENCE_DATASETS = ("modadd", "text")  # token sequences: the transformer's tasks
VECTOR_DATASETS = ("spirals", "blobs", "teacher")  # synthetic vectors, any size, no images
ARCHS: tuple[str, ...] = ("fcn", "cnn", "resnet", "transformer")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "anneal")
PATH_METHODS = ("linear", "neb", "bezier")
PAIRINGS = ("all", "mst")
