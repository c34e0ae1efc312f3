"""Data preparation (video -> TFDS array_record) and the Grain input pipelines."""
