"""The bundle contract, torch-free: the formats table and shared names (`formats`), the manifest schema with its
reader and writer (`manifest`), the typed view (`view`) and the checksum helper (`checksum`).

Both sides depend on it and on nothing else of each other: `co2s.export` writes bundles with it, `co2s.runtime`
reads them with it.
"""

from .checksum import sha256_file
from .manifest import MANIFEST_NAME, ManifestError, artefact_record, read_manifest, validate_manifest, write_manifest
from .view import Artefact, BatchSpec, Bundle, load_bundle, verify_artefact

__all__ = [
    "MANIFEST_NAME",
    "Artefact",
    "BatchSpec",
    "Bundle",
    "ManifestError",
    "artefact_record",
    "load_bundle",
    "read_manifest",
    "sha256_file",
    "validate_manifest",
    "verify_artefact",
    "write_manifest",
]
