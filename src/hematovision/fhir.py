"""A sample's differential as a FHIR R4 DiagnosticReport (built and validated with
``fhir.resources``' R4B models, R4's compatible release).

One Observation per class, contained in the report: LOINC's automated-count codes while the
model's count is unreviewed ("preliminary"), the codes of LOINC's Manual Differential panel
(24318-8) once a person has signed ("final"; "amended" for a later version). Values in UCUM
``%``; nucleated red cells per 100 white cells (``/100{WBCs}``). Platelets are counted apart
by the smear detector, not a differential class: they are not reported here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# class -> (code, display): automated count, then the manual differential (24318-8) member
CODES = {
    "automated": {
        "neutrophil": ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
        "lymphocyte": ("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
        "monocyte": ("5905-5", "Monocytes/100 leukocytes in Blood by Automated count"),
        "eosinophil": ("713-8", "Eosinophils/100 leukocytes in Blood by Automated count"),
        "basophil": ("706-2", "Basophils/100 leukocytes in Blood by Automated count"),
        "ig": ("71695-1", "Immature granulocytes/100 leukocytes in Blood by Automated count"),
        "erythroblast": (
            "58413-6",
            "Nucleated erythrocytes/100 leukocytes in Blood by Automated count",
        ),
    },
    "reviewed": {
        "neutrophil": ("26511-6", "Neutrophils/100 leukocytes in Blood"),
        "lymphocyte": ("26478-8", "Lymphocytes/100 leukocytes in Blood"),
        "monocyte": ("26485-3", "Monocytes/100 leukocytes in Blood"),
        "eosinophil": ("26450-7", "Eosinophils/100 leukocytes in Blood"),
        "basophil": ("30180-4", "Basophils/100 leukocytes in Blood"),
        "ig": ("38518-7", "Immature granulocytes/100 leukocytes in Blood"),
        "erythroblast": ("19048-8", "Nucleated erythrocytes/100 leukocytes in Blood"),
    },
}
PANELS = {
    "automated": ("69738-3", "Differential panel, method unspecified - Blood"),
    "reviewed": ("24318-8", "Manual Differential panel - Blood"),
}


def _coding(code: tuple[str, str]) -> dict:
    return {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}], "text": code[1]}


INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FLAGS = {"H": "High", "L": "Low"}


def _reference(value: dict, unit: tuple[str, str]) -> dict:
    """The lab's reference interval (``referenceRange``) and the H/L flag (``interpretation``)
    of a value of the differential's JSON; none for a version signed before they were kept."""
    out = {}
    if value.get("reference"):
        low, high = (_quantity(v, unit) for v in value["reference"])
        out["referenceRange"] = [{"low": low, "high": high}]
    if value.get("flag"):
        coding = {"system": INTERPRETATION, "code": value["flag"], "display": FLAGS[value["flag"]]}
        out["interpretation"] = [{"coding": [coding]}]
    return out


def _observation(
    key: str, code: tuple[str, str], status: str, entry: dict, field: str, unit, note: str
) -> dict:
    """One Observation from an ``entry`` of the differential's JSON: its ``field``'s value,
    and its reference interval and flag where the entry has them."""
    return {
        "resourceType": "Observation",
        "id": f"obs-{key}",
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": _coding(code),
        "valueQuantity": _quantity(entry[field], unit),
        "note": [{"text": note}],
        **_reference(entry, unit),
    }


def _quantity(value: float, unit: tuple[str, str]) -> dict:
    return {"value": value, "unit": unit[0], "system": UCUM, "code": unit[1]}


def diagnostic_report(sample: dict, signed: dict | None, model: dict) -> dict:
    """The report of ``sample`` (its API JSON: accession, differential): from its last
    signed version when ``signed`` (a version's JSON), else the current unreviewed count."""
    kind = "reviewed" if signed else "automated"
    status = "preliminary" if not signed else "final" if signed["version"] == 1 else "amended"
    differential = signed["differential"] if signed else sample["differential"]
    counted = differential["white_cells_counted"]
    observations = []
    for label, value in differential["white_cells"].items():
        if label not in CODES[kind]:
            continue  # a class of a custom model that LOINC's differential does not name
        low, high = value.get("ci95", (None, None))
        note = f"{value['count']} of {counted} white cells; 95% interval {low}-{high}%"
        observations.append(
            _observation(label, CODES[kind][label], status, value, "percent", ("%", "%"), note)
        )
    nrbc = differential["nucleated_red_cells"]
    if nrbc["per_100_white_cells"] is not None:
        observations.append(
            _observation(
                "nrbc",
                CODES[kind]["erythroblast"],
                status,
                nrbc,
                "per_100_white_cells",
                ("/100 WBC", "/100{WBCs}"),
                f"{nrbc['count']} nucleated red cells counted beside {counted} white cells",
            )
        )
    report = {
        "resourceType": "DiagnosticReport",
        "id": sample["id"],
        "identifier": [{"system": "urn:hematovision:accession", "value": sample["accession"]}],
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM"}]}
        ],
        "code": _coding(PANELS[kind]),
        "issued": (signed or {}).get("signed_at") or datetime.now(UTC).isoformat(),
        "contained": observations,
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": _conclusion(differential, signed, model),
    }
    if signed:
        report["resultsInterpreter"] = [{"display": signed["signed_by"]}]
    return DiagnosticReport.model_validate(report).model_dump(mode="json", exclude_none=True)


def _conclusion(differential: dict, signed: dict | None, model: dict) -> str:
    who = (
        f"reviewed and signed by {signed['signed_by']} (version {signed['version']})"
        if signed
        else "not reviewed: the model's count"
    )
    amended = (
        f"; amended because: {signed['amend_reason']}"
        if signed and signed.get("amend_reason")
        else ""
    )
    return (
        f"{differential['white_cells_counted']} white cells counted, "
        f"{differential['to_review']} to review; {who}{amended}. "
        f"Model {model['name']} {model['version']}."
    )
