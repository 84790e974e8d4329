"""Restoring an archive with Ray Data (`codeformer restore SRC -o DST --engine ray`): see `engine` and
docs/cluster.md. Ray is optional (`pip install 'codeformer[cluster]'`); it is imported only when a run starts."""

from codeformer.cluster.engine import ClusterOptions, restore_archive

__all__ = ["ClusterOptions", "restore_archive"]
