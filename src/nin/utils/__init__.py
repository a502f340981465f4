"""Small utilities with no knowledge of networks: atomic writes, hardware and provenance records, the
allocator setting, and the process group of data-parallel runs."""
