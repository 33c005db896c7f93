"""A plugin that fails on import, as a plugin with a missing dependency would."""

raise RuntimeError("xpuruntime_broken_engine cannot start: its native library is missing")
