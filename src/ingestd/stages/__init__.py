"""The pipeline's stages, one module each: read, plan, chunk, embed, store, commit."""
