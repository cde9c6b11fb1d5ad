"""Every video talkingface writes says it is synthetic: C2PA content credentials and an invisible watermark.

- ``Label``: what an output says about itself (mode, version, model hashes, whether to sign). The pipeline hands
  one to ``media.VideoWriter``, which watermarks every frame (``watermark.Embedder``) and, when the encoder is done,
  signs the mp4 with a C2PA manifest (``sign_mp4``) before the file appears at its path.
- Signing is offline, with a local key: on first use an ES256 (P-256) key and a two-certificate chain (a local
  root and the signing certificate it issued) are created in ``config_dir()/c2pa`` (``~/.config/talkingface/c2pa``
  by default; ``$TALKINGFACE_CONFIG_DIR`` or ``$XDG_CONFIG_HOME`` move it). A user who has a key and certificate
  chain of their own passes them (``--sign-key``/``--sign-cert``, ``RenderOptions(sign_key=..., sign_cert=...)``,
  or ``$TALKINGFACE_SIGN_KEY``/``$TALKINGFACE_SIGN_CERT``). No time-stamp authority, OCSP or remote manifest is
  ever contacted: signing and reading run with every network feature of the C2PA library off.
- ``verify(path)``: reads the manifest (valid, tampered or absent, and who signed it) and looks for the watermark.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, TalkingFaceError

log = logging.getLogger(__name__)

__all__ = ["Label", "config_dir", "signing_paths", "sign_mp4", "verify", "Verification", "MODES"]

MODES = ("photo", "text", "dub")
GENERATOR = "talkingface"
ASSERTION = "org.talkingface.generation"
PARENT_ID = "talkingface-input"  # the ingredient id of a dub's input video
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# photo and text mode make the whole picture move: trained algorithmic media. Dubbing regenerates the mouth of a
# real video: IPTC's term for real media composited with trained algorithmic media.
SOURCE_TYPE = {"photo": IPTC + "trainedAlgorithmicMedia", "text": IPTC + "trainedAlgorithmicMedia",
               "dub": IPTC + "compositeWithTrainedAlgorithmicMedia"}
DESCRIPTION = {
    "photo": "talking video generated from one photo and speech by talkingface (lip-sync model)",
    "text": "talking video generated from one photo and synthesized speech (text-to-speech) by talkingface",
    "dub": "video dubbed by talkingface: the mouth region was regenerated to follow new speech",
}
# every network feature of the C2PA SDK off: no remote manifests, no OCSP, no trust-list fetches
_C2PA_SETTINGS = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_after_sign": False},
    "builder": {"thumbnail": {"enabled": False}},
}


def _version() -> str:
    from . import __version__

    return __version__


def config_dir() -> Path:
    """The user's talkingface config folder: $TALKINGFACE_CONFIG_DIR, else $XDG_CONFIG_HOME/talkingface, else
    ~/.config/talkingface."""
    if os.environ.get("TALKINGFACE_CONFIG_DIR"):
        return Path(os.environ["TALKINGFACE_CONFIG_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "talkingface"


@dataclass(frozen=True)
class Label:
    """What one output says about itself. ``credentials=False`` leaves out the C2PA manifest (the watermark stays:
    see the README)."""

    mode: str
    models: dict = field(default_factory=dict)  # name -> sha256 of the weights used
    credentials: bool = True
    sign_key: str | None = None  # user-supplied PEM private key (else the local key, created on first use)
    sign_cert: str | None = None  # user-supplied PEM certificate chain, signing certificate first
    details: dict = field(default_factory=dict)  # more facts for the manifest's talkingface assertion
    parent: str | None = None  # the video a dub edits: the manifest names it as its parent ingredient

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def check(self) -> None:
        """Fail early (before any work) when signing would fail: an unreadable user key or certificate."""
        if self.credentials:
            _signer_material(self.sign_key, self.sign_cert)

    def manifest(self, title: str, parent: bool = False) -> dict:
        """The C2PA manifest definition. ``parent``: the input video is added as the parent ingredient (a dub),
        so the actions are ``c2pa.opened`` (that video) and ``c2pa.edited``; else ``c2pa.created``."""
        version = _version()
        action = {"action": "c2pa.edited" if parent else "c2pa.created", "digitalSourceType": SOURCE_TYPE[self.mode],
                  "softwareAgent": {"name": GENERATOR, "version": version},
                  "description": DESCRIPTION[self.mode]}
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": [PARENT_ID]}}, action] if parent \
            else [action]
        from . import watermark

        facts = {"generator": GENERATOR, "version": version, "mode": self.mode, "models": dict(self.models),
                 "watermark": {"version": watermark.VERSION, "strength": watermark.STRENGTH}, **self.details}
        return {
            "claim_generator_info": [{"name": GENERATOR, "version": version}],
            "title": title,
            "format": "video/mp4",
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": actions}},
                {"label": ASSERTION, "data": facts},
            ],
        }


def label_for(pipe, mode: str, options, parent: str | None = None, **details) -> Label:
    """The label of an output of ``pipe`` (a Pipeline) rendered with ``options`` (RenderOptions/DubOptions);
    ``parent``: the input video of a dub."""
    return Label(mode, dict(getattr(pipe, "model_hashes", {}) or {}), credentials=getattr(options, "credentials", True),
                 sign_key=getattr(options, "sign_key", None), sign_cert=getattr(options, "sign_cert", None),
                 details=details, parent=parent)


# --------------------------------------------------------------------------- keys


def signing_paths() -> tuple[Path, Path]:
    """(key, certificate chain) of the local signer in the config folder (they may not exist yet)."""
    d = config_dir() / "c2pa"
    return d / "signer.key.pem", d / "signer.chain.pem"


_key_lock = threading.Lock()


def _create_local_signer(key_path: Path, cert_path: Path) -> None:
    """A P-256 key and a chain (signing certificate, local root) valid 10 years; the root's key is discarded."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)
    who = os.environ.get("USER") or "user"
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"talkingface local root ({who})"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talkingface (self-signed, local)")])
    ku = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
              encipher_only=False, decipher_only=False)
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **ku),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"talkingface signer ({who})"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talkingface (self-signed, local)")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **ku),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    key_path.parent.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    chain = cert.public_bytes(pem) + root.public_bytes(pem)
    for path, data, mode in ((key_path, key_bytes, 0o600), (cert_path, chain, 0o644)):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    log.warning("created a local C2PA signing key and self-signed certificate in %s", key_path.parent)


def _read(path: str | os.PathLike, what: str) -> bytes:
    p = os.fspath(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{what} '{p}' does not exist") from e
    except IsADirectoryError as e:
        raise InputError(f"{what} '{p}' is a directory, not a file") from e
    except OSError as e:
        raise InputError(f"{what} '{p}' cannot be read: {e.strerror or e}") from e
    if not data.strip():
        raise InputError(f"{what} '{p}' is empty")
    return data


def _signer_material(key: str | None, cert: str | None) -> tuple[bytes, bytes, str]:
    """(private key PEM, certificate chain PEM, C2PA algorithm name), checked; creates the local key if needed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key = key or os.environ.get("TALKINGFACE_SIGN_KEY") or None
    cert = cert or os.environ.get("TALKINGFACE_SIGN_CERT") or None
    if (key is None) != (cert is None):
        raise InputError("a signing key and its certificate chain go together: give both --sign-key and --sign-cert "
                         "(or neither, for the local key)")
    if key is None:
        key_path, cert_path = signing_paths()
        if not key_path.exists() or not cert_path.exists():
            try:
                with _key_lock:
                    key_path.parent.mkdir(parents=True, exist_ok=True)
                    # a file lock too: parallel batch workers must not each write half of a key pair
                    with open(key_path.parent / ".lock", "w") as lock:
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        if not key_path.exists() or not cert_path.exists():
                            _create_local_signer(key_path, cert_path)
            except OSError as e:
                raise TalkingFaceError(f"could not create the local signing key in '{key_path.parent}': "
                                       f"{e.strerror or e}") from e
        key, cert = str(key_path), str(cert_path)
    key_pem, cert_pem = _read(key, "signing key"), _read(cert, "signing certificate")
    try:
        pk = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as e:
        raise InputError(f"signing key '{key}' is encrypted; give an unencrypted PEM key") from e
    except (ValueError, TypeError) as e:
        raise InputError(f"signing key '{key}' is not a PEM private key: {e}") from e
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as e:
        raise InputError(f"signing certificate '{cert}' is not a PEM certificate chain: {e}") from e
    if isinstance(pk, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(pk.curve.name)
    elif isinstance(pk, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    elif isinstance(pk, rsa.RSAPrivateKey):
        alg = "ps256"
    else:
        alg = None
    if alg is None:
        raise InputError(f"signing key '{key}': unsupported key type for C2PA (use EC P-256/384/521, Ed25519 or RSA)")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certs[0].public_key().public_bytes(der, pub) != pk.public_key().public_bytes(der, pub):
        raise InputError(f"signing certificate '{cert}' does not belong to the key '{key}' (its first certificate "
                         "must be the signing certificate)")
    return key_pem, cert_pem, alg


def _context():
    import c2pa

    return c2pa.Context.from_dict(_C2PA_SETTINGS)


def _parent_format(path: str | None) -> str | None:
    """The C2PA format of a dub's input video, or None when the SDK cannot read that kind of file (then the
    manifest says ``c2pa.created`` and names no parent)."""
    if not path or not os.path.isfile(path):
        return None
    ext = os.path.splitext(path)[1].lower()
    return {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".avi": "video/x-msvideo"}.get(ext)


def _add_parent(builder, path: str, fmt: str) -> bool:
    """Add the dub's input video as the parent ingredient (its own C2PA manifest, if it has one, comes with it)."""
    import c2pa

    ingredient = {"title": os.path.basename(path), "relationship": "parentOf", "label": PARENT_ID,
                  "instance_id": PARENT_ID}
    try:
        with open(path, "rb") as f:
            builder.add_ingredient(ingredient, fmt, f)
        return True
    except (OSError, c2pa.C2paError) as e:  # an input the SDK cannot parse: still label the output
        log.warning("'%s' is not named as the parent of the content credentials: %s", path, e)
        return False


def sign_mp4(src: str, dst: str, label: Label, title: str) -> None:
    """Write ``src`` with a signed C2PA manifest of ``label`` to ``dst`` (a new file)."""
    import c2pa

    key_pem, cert_pem, alg = _signer_material(label.sign_key, label.sign_cert)
    fmt = _parent_format(label.parent)
    try:
        info = c2pa.C2paSignerInfo(alg=alg.encode(), sign_cert=cert_pem, private_key=key_pem, ta_url=None)
        with _context() as ctx, c2pa.Signer.from_info(info) as signer:
            for parent in ((True, False) if fmt else (False,)):
                with c2pa.Builder(label.manifest(title, parent=parent), context=ctx) as builder:
                    if parent and not _add_parent(builder, label.parent, fmt):
                        continue
                    builder.sign_file(src, dst, signer)
                    break
    except c2pa.C2paError as e:
        raise TalkingFaceError(f"could not sign the content credentials of '{title}': {e}") from e


# --------------------------------------------------------------------------- verify


@dataclass
class Verification:
    path: str
    readable: bool
    manifest: str  # "valid" | "tampered" | "absent" | "unreadable"
    by_talkingface: bool  # the manifest names talkingface as its generator
    signer: str | None = None
    manifest_facts: dict = field(default_factory=dict)  # our assertion (mode, version, models), when present
    manifest_problems: list = field(default_factory=list)  # failure codes of the C2PA validation
    watermark: object | None = None  # watermark.Detection
    error: str | None = None
    actions: list = field(default_factory=list)  # the manifest's C2PA actions, e.g. ["c2pa.opened", "c2pa.edited"]
    source_type: str | None = None  # the IPTC digital source type of its talkingface action (last word)
    parent: str | None = None  # the title of its parent ingredient (a dub's input video)

    @property
    def found(self) -> bool:
        return (self.manifest in ("valid", "tampered") and self.by_talkingface) or bool(
            self.watermark is not None and self.watermark.found)

    @property
    def exit_code(self) -> int:
        """0: talkingface provenance found (manifest or watermark); 1: none found; 2: the file cannot be read."""
        if not self.readable:
            return 2
        return 0 if self.found else 1

    def to_dict(self) -> dict:
        wm = self.watermark
        return {"path": self.path, "readable": self.readable, "manifest": self.manifest,
                "by_talkingface": self.by_talkingface, "signer": self.signer, "facts": self.manifest_facts,
                "actions": self.actions, "source_type": self.source_type, "parent": self.parent,
                "problems": self.manifest_problems, "error": self.error,
                "watermark": None if wm is None else {"found": wm.found, "score": round(wm.score, 2),
                                                      "confidence": wm.confidence, "frames": wm.frames},
                "found": self.found, "exit_code": self.exit_code}

    def report(self) -> str:
        if not self.readable:
            return f"{self.path}: cannot be read: {self.error}"
        lines = [f"{self.path}:"]
        if self.manifest == "absent":
            lines.append("  content credentials: none (no C2PA manifest)")
        else:
            who = f" signed by {self.signer}" if self.signer else ""
            gen = "talkingface" if self.by_talkingface else "another tool (not talkingface)"
            if self.manifest == "valid":
                lines.append(f"  content credentials: valid, made by {gen},{who}")
            elif self.manifest == "tampered":
                lines.append(f"  content credentials: TAMPERED: the file changed after it was signed "
                             f"({', '.join(self.manifest_problems[:3])}); made by {gen},{who}")
            else:
                lines.append(f"  content credentials: present but unreadable ({self.error})")
            if self.manifest_facts:
                f = self.manifest_facts
                lines.append(f"    mode {f.get('mode')}, talkingface {f.get('version')}, models "
                             + ", ".join(f"{k} {str(v)[:12]}" for k, v in (f.get("models") or {}).items()))
            if self.actions:
                lines.append(f"    actions {', '.join(map(str, self.actions))}; source type {self.source_type}"
                             + (f"; edited from '{self.parent}'" if self.parent else ""))
        if self.watermark is not None:
            lines.append(f"  {self.watermark.describe()}")
        if self.found:
            lines.append("  conclusion: this video was made or edited by talkingface (AI-generated)")
        else:
            lines.append("  conclusion: no sign that talkingface made this video")
        return "\n".join(lines)


def _read_manifest(path: str, out: Verification) -> None:
    import c2pa

    try:
        with _context() as ctx, c2pa.Reader(path, context=ctx) as reader:
            state = reader.get_validation_state()
            active = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as e:
        text = str(e)
        if "ManifestNotFound" in type(e).__name__ or "no JUMBF" in text or "not found" in text.lower():
            out.manifest = "absent"
        else:
            out.manifest, out.error = "unreadable", f"{type(e).__name__}: {text}"
        return
    gens = [g.get("name") for g in active.get("claim_generator_info", []) if isinstance(g, dict)]
    out.by_talkingface = GENERATOR in gens
    sig = active.get("signature_info") or {}
    if sig:
        out.signer = f"'{sig.get('common_name')}' ({sig.get('issuer')})"
    for a in active.get("assertions", []):
        if a.get("label") == ASSERTION:
            out.manifest_facts = a.get("data") or {}
        elif str(a.get("label", "")).startswith("c2pa.actions"):
            for act in (a.get("data") or {}).get("actions", []):
                out.actions.append(act.get("action"))
                if act.get("digitalSourceType"):
                    out.source_type = str(act["digitalSourceType"]).rsplit("/", 1)[-1]
    parents = [i for i in active.get("ingredients", []) if i.get("relationship") == "parentOf"]
    out.parent = parents[0].get("title") if parents else None
    failures = (results.get("activeManifest") or {}).get("failure") or []
    # an unknown (self-signed) signer is not tampering: trust is reported apart, through who signed it
    problems = [f.get("code") for f in failures if not str(f.get("code", "")).startswith("signingCredential.untrusted")]
    out.manifest_problems = problems
    out.manifest = "tampered" if (state == "Invalid" or problems) else "valid"


def verify(path: str | os.PathLike, *, watermark: bool = True, max_frames: int = 150) -> Verification:
    """Look for talkingface's provenance in a video: the C2PA manifest and the invisible watermark."""
    from . import media
    from . import watermark as wm

    p = os.fspath(path)
    out = Verification(p, readable=True, manifest="absent", by_talkingface=False)
    try:
        media._check_input_file(p, "video")
        info = media.probe(p)
        if not info.has_video:
            raise InputError(f"video file '{p}' has no video stream")
    except InputError as e:
        out.readable, out.manifest, out.error = False, "unreadable", str(e)
        return out
    try:
        _read_manifest(p, out)
    except Exception as e:  # a broken container must not stop the watermark check
        out.manifest, out.error = "unreadable", f"{type(e).__name__}: {e}"
    if watermark:
        try:
            out.watermark = wm.detect_frames(media.iter_video_frames(p, fps=None), max_frames=max_frames)
        except InputError as e:
            if out.manifest in ("absent", "unreadable"):
                out.readable, out.error = False, str(e)
    return out


def main(args) -> int:
    """``talkingface verify FILE...``: print what was found; exit 0/1/2 (the worst of several files)."""
    codes = []
    docs = []
    for path in args.files:
        v = verify(path)
        codes.append(v.exit_code)
        if args.json:
            docs.append(v.to_dict())
        else:
            print(v.report())
    if args.json:
        print(json.dumps(docs if len(docs) > 1 else docs[0], indent=2))
    return max(codes) if 2 in codes else (1 if 1 in codes else 0)
