"""Writers: HF folders (safetensors + config.json), written atomically."""

from .atomic import atomic_output_dir, check_output_dir, check_output_file, clean_leftovers, write_text_atomic
from .hf import save_hf_folder

__all__ = [
    "atomic_output_dir",
    "check_output_dir",
    "check_output_file",
    "clean_leftovers",
    "write_text_atomic",
    "save_hf_folder",
]
