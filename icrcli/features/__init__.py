"""Features on disk: the extraction plan and its runner, the chunk store any worker can fill,
the feature-file format and its description."""
