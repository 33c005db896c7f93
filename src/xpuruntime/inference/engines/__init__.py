"""One module per engine; each registers itself with :func:`xpuruntime.inference.engine.register_engine`."""
