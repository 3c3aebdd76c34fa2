"""A PACS-style DICOM export of a phantom study, as a hospital's archive would hand it over (test helper).

Three studies (sessions) on three dates; CT and MR slices, the MAA SPECT as one multi-frame NM
file (and a planar scintigraphy), the 90Y PET as PET slices in Bq/ml with its radiopharmaceutical; two series share a folder in
two of them; every CT slice carries a private tag; a scout image, a second (arterial) diagnostic
CT with a missing slice, and a non-DICOM file lie among them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from sirtjax.io.dicom_export import dicom_dataset, dicom_decimals, dicom_series
from sirtjax.volume import make_volume

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
PATIENT = {"PatientName": "Test^Patient", "PatientID": "P042", "PatientBirthDate": "19600101", "PatientSex": "M",
           "PatientSize": 1.699, "PatientWeight": 83.1}
DATES = {"maa": "20260105", "diagnostic": "20251220", "y90": "20260119"}


def _radiopharmaceutical(name: str, meaning: str, code: str, total_bq: float, half_life_s: float) -> Sequence:
    nuclide = Dataset()
    nuclide.CodeValue, nuclide.CodingSchemeDesignator, nuclide.CodeMeaning = code, "SCT", meaning
    item = Dataset()
    item.Radiopharmaceutical = name
    item.RadionuclideCodeSequence = Sequence([nuclide])
    item.RadionuclideTotalDose = dicom_decimals([total_bq])[0]
    item.RadionuclideHalfLife = dicom_decimals([half_life_s])[0]
    item.RadiopharmaceuticalStartDateTime = "20260119090000"
    return Sequence([item])


def _slices(vol, modality: str, study: dict, description: str, tags: dict | None = None) -> list[Dataset]:
    slices = dicom_series(vol, modality="CT" if modality == "CT" else "OT", description=description,
                          tags={**PATIENT, **study, "SeriesInstanceUID": generate_uid(), **(tags or {})})
    for ds in slices:
        ds.Modality = modality
        if modality == "CT":  # a vendor's private tag
            ds.add_new(Tag(0x0019, 0x0010), "LO", "ACME 1.0")
            ds.add_new(Tag(0x0019, 0x1001), "LO", "kernel B30f")
    return slices


def _as_pet(slices: list[Dataset], total_bq: float) -> None:
    """PET slices in Bq/ml, decay corrected to the administration (ADMIN), like the phantom's PET."""
    for ds in slices:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "ADMIN", ["ATTN", "DECY"]
        ds.SeriesDate, ds.SeriesTime = ds.StudyDate, "110000"
        ds.RadiopharmaceuticalInformationSequence = _radiopharmaceutical("Y-90 microspheres", "^90^Yttrium", "C-162A7",
                                                                         total_bq, 230400.0)
        del ds.ConversionType


def _nm_spect(vol, study: dict, total_bq: float, image_type: str = "RECON TOMO") -> Dataset:
    counts = np.asarray(vol.array)
    assert counts.min() >= 0 and counts.max() < 65536 and np.all(counts == np.round(counts))
    d = np.asarray(vol.direction, np.float64)
    tags = {**PATIENT, **study, "Modality": "NM", "SeriesInstanceUID": generate_uid(), "SeriesNumber": 3,
            "SeriesDescription": f"MAA {image_type.lower()}", "ImageType": ["ORIGINAL", "PRIMARY", image_type, "EMISSION"],
            "NumberOfFrames": counts.shape[0], "Rows": counts.shape[1], "Columns": counts.shape[2],
            "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16, "BitsStored": 16,
            "HighBit": 15, "PixelRepresentation": 0, "PixelSpacing": dicom_decimals([vol.spacing_mm[1], vol.spacing_mm[0]]),
            "SpacingBetweenSlices": dicom_decimals([vol.spacing_mm[2]])[0], "SliceThickness": dicom_decimals([vol.spacing_mm[2]])[0],
            "FrameIncrementPointer": [Tag(0x0054, 0x0080)], "SliceVector": list(range(1, counts.shape[0] + 1)),
            "NumberOfSlices": counts.shape[0],
            "RadiopharmaceuticalInformationSequence": _radiopharmaceutical("Tc-99m MAA", "^99m^Technetium", "C-163A8",
                                                                           total_bq, 21624.0)}
    ds = dicom_dataset(NM_IMAGE_STORAGE, tags)
    detector = Dataset()
    detector.ImagePositionPatient = dicom_decimals(np.asarray(vol.origin_mm))
    detector.ImageOrientationPatient = dicom_decimals([*d[:, 0], *d[:, 1]])
    ds.DetectorInformationSequence = Sequence([detector])
    ds.PixelData = counts.astype("<u2").tobytes()
    return ds


def write_pacs_export(study, root: Path) -> dict[str, str]:
    """Write the export of a phantom study (``generate_study``) below root; returns name -> Series Instance UID."""
    images, activities = study.images, study.manifest["activities"]
    studies = {s: {"StudyInstanceUID": generate_uid(), "StudyDate": DATES[s], "StudyTime": "090000",
                   "AcquisitionDate": DATES[s]} for s in DATES}
    frames = {s: generate_uid() for s in ("maa", "diag_ct", "diag_mr", "y90")}
    uids: dict[str, str] = {}

    def save(name: str, slices: list[Dataset], folder: Path, prefix: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(slices):
            ds.save_as(folder / f"{prefix}{k:04d}.dcm", enforce_file_format=True)
        uids[name] = slices[0].SeriesInstanceUID

    maa = {**studies["maa"], "FrameOfReferenceUID": frames["maa"]}
    save("maa_ct", _slices(images["maa_ct"], "CT", maa, "CT low dose MAA"), root / "P042" / "ST1" / "SE1", "CT")
    save("maa_spect", [_nm_spect(images["maa_spect"], maa, activities["maa_injected_mbq"] * 1e6)],
         root / "P042" / "ST1" / "SE1", "NM")  # the SPECT in the CT's folder
    planar = _nm_spect(images["maa_spect"], maa, activities["maa_injected_mbq"] * 1e6, image_type="STATIC")
    save("planar", [planar], root / "P042" / "ST1" / "SE5", "NM")  # the lung shunt scintigraphy
    ct = images["maa_ct"]
    scout = _slices(make_volume(np.asarray(ct.array)[:1], ct.spacing_mm, ct.origin_mm, ct.direction), "CT", maa, "Topogram",
                    {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    save("scout", scout, root / "P042" / "ST1" / "SE0", "SC")
    diag = studies["diagnostic"]
    save("diag_ct", _slices(images["diag_ct"], "CT", {**diag, "FrameOfReferenceUID": frames["diag_ct"]}, "Abdomen PV",
                            {"ContrastBolusAgent": "Iomeprol"}), root / "P042" / "ST2" / "SE2", "CT")
    arterial = _slices(images["diag_ct"], "CT", {**diag, "FrameOfReferenceUID": frames["diag_ct"]}, "Abdomen arterial",
                       {"ContrastBolusAgent": "Iomeprol"})
    del arterial[len(arterial) // 2]  # lost in transfer
    save("diag_ct_arterial", arterial, root / "P042" / "ST2" / "SE3", "CT")
    save("diag_mr", _slices(images["diag_mr"], "MR", {**diag, "FrameOfReferenceUID": frames["diag_mr"]}, "T1 VIBE"),
         root / "P042" / "ST2" / "SE4", "MR")
    y90 = {**studies["y90"], "FrameOfReferenceUID": frames["y90"]}
    save("y90_ct", _slices(images["y90_ct"], "CT", y90, "CT AC"), root / "P042" / "ST3", "CT")
    pet = _slices(images["y90_pet"], "PT", y90, "Y90 PET")
    _as_pet(pet, activities["y90_injected_gbq"] * 1e9)
    save("y90_pet", pet, root / "P042" / "ST3", "PT")  # PET and CT in one folder
    (root / "README.txt").write_text("exported from PACS\n")
    return uids
