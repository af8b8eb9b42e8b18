__version__ = "0.1.0"

# Where cached results live unless --cache-dir says otherwise: project-local, beside the outputs.
DEFAULT_CACHE_DIR = ".memorize/cache"
