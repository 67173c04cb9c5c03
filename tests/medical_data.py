"""Small DICOM and NIfTI files written by the tests, and the real ones that ship in pydicom's and nibabel's wheels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def pydicom_file(name: str) -> Path:
    """A real DICOM test file from pydicom's wheel (opened by path: get_testdata_files may go online)."""
    import pydicom

    return Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / name


def nibabel_file(name: str) -> Path:
    import nibabel

    return Path(os.path.dirname(nibabel.__file__)) / "tests" / "data" / name


def write_dicom(path: Path, pixels: np.ndarray, patient: str | None = "P1", study: str | None = None,
                photometric: str = "MONOCHROME2", slope: float = 1.0, intercept: float = 0.0,
                center=None, width=None, bits: int = 16, signed: bool = True, **extra) -> Path:
    """A CT-like file of ``pixels`` (rows, cols) or frames (n, rows, cols), uncompressed, explicit VR."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    if patient is not None:
        ds.PatientID = patient
    ds.StudyInstanceUID = study or generate_uid()
    frames = pixels.ndim == 3
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, int(signed)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    for key, value in extra.items():
        setattr(ds, key, value)
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[(bits, signed)]
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4) if affine is None else affine), str(path))
    return path


def dicom_study(root: Path, patients: int = 6, slices: int = 3, size: int = 48, seed: int = 0) -> Path:
    """Two classes (normal, lesion) of ``patients`` patients each; a patient's slices are near-copies.

    Each patient has its own smooth anatomy; lesion patients carry a bright disc. Files go under
    ``root/<class>/<patient>/s<k>.dcm`` with PatientID ``<class>-<n>``, HU stored with intercept -1024.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for label in ("normal", "lesion"):
        for p in range(patients):
            coarse = rng.normal(0, 60, (6, 6))
            anatomy = np.kron(coarse, np.ones((size // 6, size // 6)))[:size, :size] + 40
            if label == "lesion":
                cy, cx = rng.integers(12, size - 12, 2)
                anatomy = anatomy + 120 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 36)
            for k in range(slices):
                hu = anatomy + rng.normal(0, 3, (size, size))
                write_dicom(root / label / f"{label}-{p}" / f"s{k}.dcm", hu + 1024, patient=f"{label}-{p}",
                            intercept=-1024.0, center=40, width=400, PatientName="Doe^Jane",
                            InstitutionName="St Example Hospital")
    return root
