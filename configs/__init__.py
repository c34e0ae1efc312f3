"""ml_collections configs (`get_config(arg)`), one file per trainable stage; filled in by the trainer issues."""
