"""The built-in synthetic suite ``synth``: five small, physically motivated datasets.

``rmis eval MODEL --suite synth`` runs offline on a fresh machine: :func:`ensure` generates a
dataset deterministically on first use into a cache folder and reuses it afterwards. The files
follow the released RMIS layouts (PROTOCOL.md section 1), so the ordinary loaders and the
ordinary protocol score them.

Datasets (:data:`SYNTH_DATASETS`)
---------------------------------
============  ====  ========  ===========================================  ====================
name          task  rate, Hz  classes / machines                           layout
============  ====  ========  ===========================================  ====================
synth_ad      ad    16 000    dev: synthfan, synthpump; sections 00, 01    DCASE 2022+ dev
synth_fd16k   fd    16 000    healthy, tooth_crack, tooth_wear, eccentric  manifest.csv (sound)
synth_fd25k6  fd    25 600    normal, inner, outer, ball                   manifest.csv
synth_fd48k   fd    48 000    healthy, tooth_crack, outer_de, outer_nde    manifest.csv
synth_fd64k   fd    64 000    healthy, outer, inner_de, inner_nde          manifest.csv
============  ====  ========  ===========================================  ====================

FD: per class 10 recordings x 2 sensor channels x 20 s, each channel cut into two 10-s files,
i.e. 20 groups of 2 files per class: every test size of the multi-split curve (0.05 ... 0.95)
leaves both sides with every class and the 5 neighbours of the k-NN
``<class>_rec<RR>_ch<C>_<SS>.wav`` (mono 16-bit PCM at the native rate); the group (sealing
unit) is ``<class>_rec<RR>_ch<C>``, so every class has 20 groups. ``manifest.csv``
(``path,label,group``) lists the files and ``conditions.csv`` the ground truth of every
recording (shaft speed, severity, defect and mesh frequencies). ``synth_fd16k`` is a pair of
microphones next to a gearbox; the others are accelerometers.

AD (DCASE 2022+ dev layout), 10-s clips, per machine and section (00, 01):
``dev_data/<machine>/train/section_XX_<domain>_train_normal_NNNN_<attr>.wav``, 20 source and 4
target clips, and ``dev_data/<machine>/test/section_XX_<domain>_test_<label>_NNNN_<attr>.wav``,
5 normal and 5 anomalous clips per domain (``<attr>`` e.g. ``spd_2``).

Every dataset folder ends with a ``SYNTH_VERSION`` marker file, written last.

Physics
-------
Time ``t`` in s, sample rate ``f_s`` in Hz, shaft rotation frequency ``f_r`` in Hz, drawn per
recording uniformly within +-4 % of the rig's nominal speed.

*Rolling-element bearing* (``n`` balls of diameter ``d`` on pitch diameter ``D``, contact angle
``phi``, outer race fixed). With ``rho = (d / D) cos(phi)`` the kinematic defect frequencies are::

    FTF  = f_r / 2 * (1 - rho)                    cage (fundamental train)
    BPFO = n * f_r / 2 * (1 - rho)                 ball pass, outer race
    BPFI = n * f_r / 2 * (1 + rho)                 ball pass, inner race
    BSF  = D / (2 d) * f_r * (1 - rho**2)          ball spin

A localised defect produces a train of impacts ``sum_k A_k delta(t - t_k)`` whose intervals
``t_k+1 - t_k = (1 + 0.01 e_k) / f_defect`` (``e_k`` standard normal) model the random slip of
the rolling elements. With ``q(psi) = max(0, cos psi)**1.5`` the Stribeck load distribution of
a radial load zone (load-zone factor 1/2) and ``s`` the recording's severity (log-uniform):

* outer race (stationary, in the load zone): ``f_defect = BPFO``, ``A_k = s``;
* inner race (rotates with the shaft through the load zone): ``f_defect = BPFI``,
  ``A_k = s (0.1 + 0.9 q(2 pi f_r t_k + psi_0))``, i.e. shaft-rate amplitude modulation and
  sidebands ``BPFI +- k f_r`` in the envelope spectrum;
* ball (hits both races once per spin, carried through the load zone by the cage):
  ``f_defect = 2 BSF``, ``A_k = s (0.1 + 0.9 q(2 pi FTF t_k + psi_0))``;

each with a 15 % impact-to-impact amplitude scatter. The force pulse of an outer-race impact is
sharp; an inner-race impact reaches the housing through a ball and the outer race, a ball
defect strikes with a curved surface, so their pulses are longer: mode ``m`` receives the
impact scaled by ``exp(-f_m / f_c)`` with ``f_c`` = infinity (outer), 30 kHz (inner), 5 kHz
(ball).

*Structure*. Impacts and a weak broadband random force (rolling noise, friction; white,
standard deviation ``sigma_F``) excite the structural modes ``(f_m, zeta_m)`` of the rig. A mode
is the two-pole resonator with impulse response ``h_m[j] = r**j sin(theta j)``,
``r = exp(-zeta_m 2 pi f_m / f_s)``, ``theta = 2 pi f_m sqrt(1 - zeta_m**2) / f_s`` (impulse
invariance)::

    y_m[j] = 2 r cos(theta) y_m[j-1] - r**2 y_m[j-2] + r sin(theta) x[j-1]

Sensor channel ``c`` records ``sum_m g_cm y_m``: the gains ``g_cm`` depend on the sensor
position (and scatter 10 % per recording: mounting), and each channel adds its own white sensor
noise (level scattered 15 %) plus the shaft's residual 1x and 2x components (imbalance,
misalignment). Global modes (rotor and frame; below 8 kHz at the 48 and 64 kHz rigs) are
excited by every impact, local housing modes only by the impacts of a defect in their own
bearing. An envelope analysis
(band-pass around a mode, modulus of the analytic signal, spectrum) shows the defect frequency.

*Gear mesh* (pinion with ``z_1`` teeth on the input shaft, wheel with ``z_2`` teeth, mesh
frequency ``f_mesh = z_1 f_r``, input shaft angle ``Theta = 2 pi f_r t + Theta_0``)::

    x_g(t) = a(t) sum_h A_h cos(h (z_1 Theta + b(t)) + phi_h),   h = 1, 2, 3
    a(t)   = 1 + m_1 cos(Theta + psi_1) + m_2 cos(Theta z_1 / z_2 + psi_2) - c p(Theta)
    b(t)   = beta sin(Theta + psi_3) + c p(Theta)

Shaft-rate amplitude (``m_1``, ``m_2``) and phase (``beta``) modulation put sidebands
``h f_mesh +- k f_r`` (and ``k f_r z_1 / z_2``) around the mesh harmonics. Faults, with severity
``s``: *eccentric* pinion: ``m_1 += s``, ``beta += 1.5 s`` (strong low-order sidebands);
*tooth_crack*: the stiffness drop of one tooth, ``c = s`` and
``p(Theta) = exp(-(wrap(Theta - Theta_c) / w)**2 / 2)`` with ``w`` = 0.7 tooth pitch, once per
revolution (many sidebands spread over the mesh harmonics), plus an impact ``s / 2`` on the
structure whenever ``Theta = Theta_c``; *tooth_wear*: ``A_2``, ``A_3`` grow by ``1 + 3 s`` and
``1 + 5 s``, and scuffing injects mesh-synchronous noise
``2 s sigma_F n(t) (1 + cos(z_1 Theta + b(t)))`` into the structure.

*Information above 8 kHz*. ``outer_de`` / ``outer_nde`` (48 kHz) and ``inner_de`` /
``inner_nde`` (64 kHz) are the same defect in the drive-end or in the non-drive-end bearing of
the same type: same kinematics (same defect frequency, same speed and severity
distributions) and the same excitation of the global modes below 8 kHz (both bearings carry the
same rotor), so their content below 8 kHz is statistically identical. Only the local housing
modes differ (two per housing, ``zeta`` = 0.03; 48 kHz: DE 11.5 and 14.5 kHz, NDE 17 and
20.5 kHz; 64 kHz: DE 13 and 16 kHz, NDE 22 and 26 kHz). An encoder that resamples to 16 kHz
cannot tell the pair apart; one at the native rate can.

*Sound* (``synth_fd16k``). The microphones hear the gear mesh and the casing modes, with gains
that depend on their position, plus pink room noise (white noise through ``1 / (1 - 0.98
z^-1)``) and white self-noise.

*Anomaly detection* (``synth_ad``, 16 kHz). *synthfan*: blade-pass tones ``h N_b f_r``
(``N_b`` blades, ``h`` = 1..3) with a weak once-per-revolution modulation, aerodynamic
broadband noise (300-3500 Hz, amplitude-modulated at the blade-pass frequency), motor hum at
twice the 50 Hz line frequency, two housing modes (3.1 and 5.3 kHz) driven by a random force,
background noise. Anomalies: imbalance (strong ``f_r`` tone and modulation), a damaged blade
(once-per-revolution dip of the blade-pass amplitude), a motor-bearing outer-race fault
(impacts at its BPFO) and rubbing (4-7 kHz noise bursts once per revolution). *synthpump*:
vane-pass tones ``h N_v f_r``, low-pass flow noise (900 Hz) growing with the load, hum,
housing modes at 4.2 and 7.1 kHz. Anomalies: cavitation (Poisson bubble collapses, 200-600 per
s, exponential amplitudes), clogging (stronger vane-pass tone, shaft-rate modulation, less
flow noise), a leak (2.5-4 kHz hiss) and a bearing fault. Anomaly types take turns; severities
are log-uniform over a decade, so some anomalies are subtle. Sections 00 and 01 are two
machines of a type (blade or vane count, nominal speed). The source domain runs at settings
1-3 (attribute ``spd_<n>``: speed, fan; ``ld_<n>``: load, pump), the target domain at the
shifted setting 5 with a louder, differently coloured background.

Determinism
-----------
Every random draw comes from ``numpy.random.default_rng`` seeded with a fixed integer key
(dataset, class, recording or clip; strings enter through CRC-32, never ``hash``), never from
the clock or the thread schedule. Signals are computed in float64, divided by a fixed full
scale, clipped to [-1, 1], rounded half-to-even to int16 and written as 16-bit PCM WAV by
soundfile, so the files are byte-identical across runs and machines (the quantisation absorbs
last-ulp differences between platform math libraries, barring a sample that falls exactly on
a rounding boundary).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, lfilter

from rmis.data.specs import DatasetSpec, fd_spec
from rmis.errors import RMISError

#: Version of the generator; a cached dataset whose marker differs is regenerated.
SYNTH_VERSION = "3"
#: Name of the marker file written last into a complete dataset folder.
MARKER_FILE = "SYNTH_VERSION"
#: Length of one released file (and of one FD segment), s.
SEGMENT_SECONDS = 10.0
#: A temporary folder of an interrupted generation older than this (s) is removed.
_STALE_SECONDS = 3600.0

_INT16_MAX = 32767


# ------------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------------


def _fd_spec(
    name: str, sr: int, modality: str, classes: tuple[str, ...], title: str
) -> DatasetSpec:
    return fd_spec(name, modality, sr, SEGMENT_SECONDS, classes, title)


#: The five datasets of the synthetic suite, in suite order.
SYNTH_DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="synth_ad",
            task="ad",
            modality="sound",
            sample_rate=16_000,
            window_seconds=SEGMENT_SECONDS,
            protocol="dcase2023",
            machines={"dev": ("synthfan", "synthpump")},
            title="rmis synthetic machine sounds (DCASE 2022+ dev layout)",
        ),
        _fd_spec(
            "synth_fd16k",
            16_000,
            "sound",
            ("healthy", "tooth_crack", "tooth_wear", "eccentric"),
            "rmis synthetic gearbox sound",
        ),
        _fd_spec(
            "synth_fd25k6",
            25_600,
            "vibration",
            ("normal", "inner", "outer", "ball"),
            "rmis synthetic bearing vibration",
        ),
        _fd_spec(
            "synth_fd48k",
            48_000,
            "vibration",
            ("healthy", "tooth_crack", "outer_de", "outer_nde"),
            "rmis synthetic gearbox and bearing vibration",
        ),
        _fd_spec(
            "synth_fd64k",
            64_000,
            "vibration",
            ("healthy", "outer", "inner_de", "inner_nde"),
            "rmis synthetic bearing vibration (64 kHz)",
        ),
    ]
}


def _spec(name: str) -> DatasetSpec:
    try:
        return SYNTH_DATASETS[name]
    except KeyError:
        raise RMISError(
            f"unknown synthetic dataset {name!r}; the synth suite has: " + ", ".join(SYNTH_DATASETS)
        ) from None


# ------------------------------------------------------------------------------------------------
# physics building blocks
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry and its kinematic defect frequencies (outer race fixed).

    Attributes:
        designation: bearing type, e.g. ``"6205"``.
        n_balls: number of rolling elements.
        ball_diameter: ball diameter ``d`` in mm.
        pitch_diameter: pitch diameter ``D`` in mm.
        contact_angle: contact angle ``phi`` in degrees.
    """

    designation: str
    n_balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle: float = 0.0

    @property
    def rho(self) -> float:
        """``(d / D) cos(phi)`` (dimensionless)."""
        return self.ball_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_angle))

    def ftf(self, shaft_hz: float) -> float:
        """Cage frequency in Hz at shaft frequency ``shaft_hz`` (Hz)."""
        return shaft_hz / 2.0 * (1.0 - self.rho)

    def bpfo(self, shaft_hz: float) -> float:
        """Outer-race ball-pass frequency in Hz at shaft frequency ``shaft_hz`` (Hz)."""
        return self.n_balls * shaft_hz / 2.0 * (1.0 - self.rho)

    def bpfi(self, shaft_hz: float) -> float:
        """Inner-race ball-pass frequency in Hz at shaft frequency ``shaft_hz`` (Hz)."""
        return self.n_balls * shaft_hz / 2.0 * (1.0 + self.rho)

    def bsf(self, shaft_hz: float) -> float:
        """Ball spin frequency in Hz at shaft frequency ``shaft_hz`` (Hz)."""
        return self.pitch_diameter / (2.0 * self.ball_diameter) * shaft_hz * (1.0 - self.rho**2)


@dataclass(frozen=True)
class _Mode:
    """A structural mode: natural frequency (Hz), damping ratio, path, gain per channel.

    ``path`` is ``"all"`` for a global mode (excited by every impact) or a location (``"de"``,
    ``"nde"``) for a local housing mode excited only by impacts of a defect at that location.
    """

    freq: float
    zeta: float
    gains: tuple[float, ...]
    path: str = "all"


def _resonate(x: np.ndarray, fs: float, freq: float, zeta: float) -> np.ndarray:
    """Response of the two-pole resonator ``h[j] = r**j sin(theta j)`` (peak ~1) to ``x``."""
    wn = 2.0 * math.pi * freq / fs
    r = math.exp(-zeta * wn)
    theta = wn * math.sqrt(1.0 - zeta * zeta)
    return lfilter([0.0, r * math.sin(theta)], [1.0, -2.0 * r * math.cos(theta), r * r], x)


def _load_zone(psi: np.ndarray) -> np.ndarray:
    """Stribeck load distribution ``max(0, cos psi)**1.5`` (load-zone factor 1/2)."""
    return np.maximum(np.cos(psi), 0.0) ** 1.5


#: A sparse excitation: sample indices and impulse amplitudes.
_Spikes = tuple[np.ndarray, np.ndarray]


def _spikes(times: np.ndarray, amps: np.ndarray, n: int, fs: float) -> _Spikes:
    """Impulses ``amps`` at ``times`` (s), each on its nearest of ``n`` samples at ``fs`` Hz."""
    return np.minimum(np.rint(times * fs).astype(np.int64), n - 1), amps


def _dense(spikes: _Spikes, n: int) -> np.ndarray:
    """``[n]`` array of a sparse excitation."""
    return np.bincount(spikes[0], weights=spikes[1], minlength=n)


def _impacts(
    rng: np.random.Generator,
    n: int,
    fs: float,
    rate_hz: float,
    amplitude: Callable[[np.ndarray], np.ndarray],
    slip: float = 0.01,
    scatter: float = 0.15,
) -> _Spikes:
    """Sparse excitation (``n`` samples) of an impact train at ``rate_hz`` (Hz) with random slip.

    Intervals are ``(1 + slip e_k) / rate_hz``; amplitudes ``amplitude(t_k) (1 + scatter e'_k)``.
    """
    duration = n / fs
    count = int(duration * rate_hz * 1.1) + 4
    intervals = (1.0 + slip * rng.standard_normal(count)) / rate_hz
    times = rng.uniform(0.0, 1.0 / rate_hz) + np.concatenate(([0.0], np.cumsum(intervals[:-1])))
    times = times[times < duration]
    amps = amplitude(times) * (1.0 + scatter * rng.standard_normal(times.size))
    return _spikes(times, amps, n, fs)


def _tone(freq: float, phase: float, n: int, fs: float, block: int = 1024) -> np.ndarray:
    """``cos(2 pi freq j / fs + phase)`` for ``j < n`` (``freq`` in Hz, ``fs`` in Hz).

    Computed by angle addition over blocks of ``block`` samples (two small cosine tables and
    two products), several times faster than ``np.cos`` over all samples and as accurate.
    """
    w = 2.0 * math.pi * freq / fs
    inner = w * np.arange(block) + phase
    outer = (w * block) * np.arange(-(-n // block))
    out = np.multiply.outer(np.cos(outer), np.cos(inner))
    out -= np.multiply.outer(np.sin(outer), np.sin(inner))
    return out.reshape(-1)[:n]


def _angle(freq: float, phase: float, n: int, fs: float) -> np.ndarray:
    """Rotation angle ``2 pi freq j / fs + phase`` reduced to ``[0, 2 pi)`` (rad)."""
    u = np.arange(n) * (freq / fs) + phase / (2.0 * math.pi)
    u -= np.floor(u)
    u *= 2.0 * math.pi
    return u


def _pulse(angle: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Once-per-revolution Gaussian pulse ``exp(-(wrap(angle - centre) / width)**2 / 2)``."""
    d = (angle - centre) / (2.0 * math.pi) + 0.5
    d -= np.floor(d)
    d -= 0.5
    d *= 2.0 * math.pi / width
    return np.exp(-0.5 * d * d)


def _pink(rng: np.random.Generator, n: int, pole: float = 0.98) -> np.ndarray:
    """Low-frequency-heavy noise: white noise through ``1 / (1 - pole z^-1)``, unit-ish RMS."""
    return lfilter([math.sqrt(1.0 - pole * pole)], [1.0, -pole], rng.standard_normal(n))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _to_pcm16(x: np.ndarray, full_scale: float) -> np.ndarray:
    """Quantise float64 ``x`` to int16 with the fixed ``full_scale`` (clip, round half-even)."""
    q = np.rint(np.clip(x / full_scale, -1.0, 1.0) * _INT16_MAX)
    return q.astype(np.int16)


def _seed(*key: int | str) -> np.random.Generator:
    """A generator seeded by a fixed key (strings enter through CRC-32, never ``hash``)."""
    ints = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in key]
    return np.random.default_rng(ints)


# ------------------------------------------------------------------------------------------------
# fault diagnosis
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fault:
    """A class of an FD rig: fault ``kind``, its location and its severity range."""

    kind: str  # none, outer, inner, ball, crack, wear, eccentric
    location: str = "all"
    severity: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class _Rig:
    """Everything that makes one synthetic FD dataset."""

    shaft_hz: float
    bearing: BearingGeometry
    modes: tuple[_Mode, ...]
    faults: dict[str, _Fault]
    force: float  # std of the broadband random force
    noise: tuple[float, ...]  # white sensor noise std per channel
    gear_teeth: tuple[int, int] | None = None
    gear_gains: tuple[float, ...] = (0.0, 0.0)
    gear_amp: float = 0.0
    shaft_amp: float = 0.005  # 1x / 2x shaft components (residual imbalance, misalignment)
    room: tuple[float, ...] = (0.0, 0.0)  # pink room-noise std per channel (sound)
    full_scale: float = 2.0
    recordings: int = 10
    channels: int = 2
    segments: int = 2


@dataclass(frozen=True)
class Recording:
    """Ground truth of one synthetic FD recording (all channels, all its segments).

    Attributes:
        name: ``<class>_rec<RR>``; its groups are ``<name>_ch<C>``.
        label: class name.
        shaft_hz: shaft rotation frequency in Hz (input shaft for gearboxes).
        severity: fault severity (impact amplitude or modulation depth; 0 for healthy).
        bearing: geometry of the rig's bearings.
        mesh_hz: gear mesh frequency in Hz (None without a gear).
    """

    name: str
    label: str
    shaft_hz: float
    severity: float
    bearing: BearingGeometry
    mesh_hz: float | None


_G6205 = BearingGeometry("6205", 9, 7.94, 39.04)
_G6206 = BearingGeometry("6206", 9, 9.53, 46.0)
_G6203 = BearingGeometry("6203", 8, 6.75, 28.55)

_RIGS: dict[str, _Rig] = {
    # Gearbox microphone: two microphones, casing modes, room noise.
    "synth_fd16k": _Rig(
        shaft_hz=20.0,
        bearing=_G6206,
        gear_teeth=(27, 71),
        gear_gains=(1.0, 0.6),
        gear_amp=0.08,
        modes=(
            _Mode(1450.0, 0.03, (1.0, 0.5)),
            _Mode(3100.0, 0.02, (0.6, 1.0)),
            _Mode(5200.0, 0.02, (0.4, 0.7)),
        ),
        faults={
            "healthy": _Fault("none"),
            "tooth_crack": _Fault("crack", severity=(0.15, 0.6)),
            "tooth_wear": _Fault("wear", severity=(0.15, 0.7)),
            "eccentric": _Fault("eccentric", severity=(0.3, 0.8)),
        },
        force=0.004,
        noise=(0.004, 0.005),
        room=(0.02, 0.025),
        shaft_amp=0.002,
    ),
    # Bearing rig, accelerometers vertical and horizontal on the test bearing housing.
    "synth_fd25k6": _Rig(
        shaft_hz=30.0,
        bearing=_G6205,
        modes=(
            _Mode(2700.0, 0.02, (1.0, 0.6)),
            _Mode(4900.0, 0.015, (0.7, 1.0)),
            _Mode(8600.0, 0.01, (0.5, 0.4)),
        ),
        faults={
            "normal": _Fault("none"),
            "inner": _Fault("inner", severity=(0.1, 0.5)),
            "outer": _Fault("outer", severity=(0.06, 0.3)),
            "ball": _Fault("ball", severity=(0.1, 0.5)),
        },
        force=0.004,
        noise=(0.02, 0.025),
    ),
    # Gearbox with drive-end (DE) and non-drive-end (NDE) input-shaft bearings.
    "synth_fd48k": _Rig(
        shaft_hz=25.0,
        bearing=_G6206,
        gear_teeth=(23, 61),
        gear_gains=(1.0, 0.7),
        gear_amp=0.04,
        modes=(
            _Mode(1900.0, 0.03, (1.0, 0.8)),
            _Mode(4300.0, 0.02, (0.6, 1.0)),
            _Mode(6800.0, 0.015, (0.5, 0.6)),
            _Mode(11_500.0, 0.03, (1.5, 1.0), path="de"),
            _Mode(14_500.0, 0.03, (1.0, 0.7), path="de"),
            _Mode(17_000.0, 0.03, (1.0, 1.5), path="nde"),
            _Mode(20_500.0, 0.03, (0.7, 1.0), path="nde"),
        ),
        faults={
            "healthy": _Fault("none"),
            "tooth_crack": _Fault("crack", severity=(0.15, 0.6)),
            "outer_de": _Fault("outer", "de", severity=(0.06, 0.3)),
            "outer_nde": _Fault("outer", "nde", severity=(0.06, 0.3)),
        },
        force=0.004,
        noise=(0.02, 0.025),
    ),
    # Bearing rig after a motor, DE and NDE bearings of the same type.
    "synth_fd64k": _Rig(
        shaft_hz=25.0,
        bearing=_G6203,
        modes=(
            _Mode(2300.0, 0.02, (1.0, 0.7)),
            _Mode(5600.0, 0.015, (0.6, 1.0)),
            _Mode(13_000.0, 0.03, (2.0, 1.4), path="de"),
            _Mode(16_000.0, 0.03, (1.4, 1.0), path="de"),
            _Mode(22_000.0, 0.03, (1.4, 2.0), path="nde"),
            _Mode(26_000.0, 0.03, (1.0, 1.4), path="nde"),
        ),
        faults={
            "healthy": _Fault("none"),
            "outer": _Fault("outer", "de", severity=(0.06, 0.3)),
            "inner_de": _Fault("inner", "de", severity=(0.1, 0.5)),
            "inner_nde": _Fault("inner", "nde", severity=(0.1, 0.5)),
        },
        force=0.004,
        noise=(0.02, 0.025),
    ),
}


def _rig(name: str) -> _Rig:
    spec = _spec(name)
    if spec.task != "fd":
        raise RMISError(f"{name!r} is an anomaly-detection dataset; it has no FD recordings")
    return _RIGS[name]


def fd_recordings(name: str) -> list[Recording]:
    """Ground truth of every recording of synthetic FD dataset ``name`` (cheap, no audio).

    Raises:
        RMISError: unknown name, or an AD dataset.
    """
    rig = _rig(name)
    spec = SYNTH_DATASETS[name]
    out = []
    for ci, label in enumerate(spec.classes):
        fault = rig.faults[label]
        for r in range(rig.recordings):
            rng = _seed(name, "conditions", ci, r)
            shaft = rig.shaft_hz * (1.0 + rng.uniform(-0.04, 0.04))
            sev = 0.0 if fault.kind == "none" else _log_uniform(rng, *fault.severity)
            mesh = shaft * rig.gear_teeth[0] if rig.gear_teeth else None
            out.append(Recording(f"{label}_rec{r:02d}", label, shaft, sev, rig.bearing, mesh))
    return out


def _gear(
    rng: np.random.Generator, n: int, fs: float, rec: Recording, rig: _Rig, kind: str
) -> tuple[np.ndarray, np.ndarray | _Spikes | None]:
    """Gear-mesh vibration ``x_g`` (``n`` samples at ``fs`` Hz) and the fault's structural
    excitation: impacts of a cracked tooth (sparse), scuffing noise of wear (dense) or None."""
    assert rig.gear_teeth is not None
    z1, z2 = rig.gear_teeth
    fr, s = rec.shaft_hz, rec.severity
    theta0 = rng.uniform(0.0, 2.0 * math.pi)
    psi = rng.uniform(0.0, 2.0 * math.pi, size=7)
    m1, m2, beta = 0.05 * rng.uniform(0.6, 1.4), 0.03 * rng.uniform(0.6, 1.4), 0.03
    harmonics = np.array([1.0, 0.45, 0.2]) * rng.uniform(0.8, 1.25, size=3)
    if kind == "eccentric":
        m1 += s
        beta += 1.5 * s
    elif kind == "wear":
        harmonics[1:] *= 1.0 + np.array([3.0, 5.0]) * s
    theta = _angle(fr, theta0, n, fs)
    am = m1 * _tone(fr, theta0 + psi[0], n, fs)
    am += m2 * _tone(fr * z1 / z2, psi[1], n, fs)
    am += 1.0
    mesh = beta * _tone(fr, theta0 + psi[2] - math.pi / 2.0, n, fs)  # beta sin(Theta + psi_3)
    mesh += z1 * theta
    extra: np.ndarray | _Spikes | None = None
    if kind == "crack":
        p = _pulse(theta, psi[3], 0.7 * 2.0 * math.pi / z1)
        am -= s * p
        mesh += s * p
        # The cracked tooth's impact as it enters the mesh: Theta = Theta_c, once per revolution.
        first = (((psi[3] - theta0) / (2.0 * math.pi)) % 1.0) / fr
        tk = first + np.arange(int(n / fs * fr) + 1) / fr
        tk = tk[tk < n / fs]
        extra = _spikes(tk, 0.5 * s * (1.0 + 0.15 * rng.standard_normal(tk.size)), n, fs)
    elif kind == "wear":
        # Scuffing: broadband noise modulated by the tooth mesh, injected into the structure.
        extra = 2.0 * s * rig.force * (1.0 + np.cos(mesh)) * rng.standard_normal(n)
    x = harmonics[0] * np.cos(mesh + psi[4])
    x += harmonics[1] * np.cos(2.0 * mesh + psi[5])
    x += harmonics[2] * np.cos(3.0 * mesh + psi[6])
    x *= rig.gear_amp * am
    return x, extra


#: Corner frequency (Hz) of the impact-force spectrum ``exp(-f / f_c)`` per bearing fault kind:
#: an outer-race defect is struck directly (sharp impact), an inner-race impact reaches the
#: housing through a rolling element and the outer race, a ball defect strikes with its curved
#: surface (longer, softer contact).
_CORNER_HZ = {"outer": math.inf, "inner": 30_000.0, "ball": 5_000.0}


def _bearing_impacts(
    rng: np.random.Generator, n: int, fs: float, rec: Recording, kind: str, psi0: float
) -> _Spikes | None:
    """Impact train of a bearing defect (None for other faults)."""
    geo, fr, s = rec.bearing, rec.shaft_hz, rec.severity
    if kind == "outer":
        return _impacts(rng, n, fs, geo.bpfo(fr), lambda tk: np.full(tk.shape, s))
    if kind == "inner":
        return _impacts(
            rng,
            n,
            fs,
            geo.bpfi(fr),
            lambda tk: s * (0.1 + 0.9 * _load_zone(2 * math.pi * fr * tk + psi0)),
        )
    if kind == "ball":
        ftf = geo.ftf(fr)
        return _impacts(
            rng,
            n,
            fs,
            2.0 * geo.bsf(fr),
            lambda tk: s * (0.1 + 0.9 * _load_zone(2 * math.pi * ftf * tk + psi0)),
        )
    return None


def _fd_signal(name: str, rec: Recording, class_index: int, rec_index: int) -> np.ndarray:
    """``[channels, n]`` float64 signal of one recording (all its segments)."""
    rig = _RIGS[name]
    fs = SYNTH_DATASETS[name].sample_rate
    n = int(round(rig.segments * SEGMENT_SECONDS * fs))
    rng = _seed(name, "signal", class_index, rec_index)
    fault = rig.faults[rec.label]
    psi0 = rng.uniform(0.0, 2.0 * math.pi)

    force = rig.force * rng.standard_normal(n)
    impacts = _bearing_impacts(rng, n, fs, rec, fault.kind, psi0)
    # Residual imbalance (1x) and misalignment (2x) of the shaft, seen directly by the sensor.
    a1, a2 = rig.shaft_amp * rng.uniform(0.5, 1.5, size=2)
    direct = a1 * _tone(rec.shaft_hz, psi0, n, fs)
    direct += a2 * _tone(2.0 * rec.shaft_hz, 2.0 * psi0 + 1.0, n, fs)
    glob = force
    gear = None
    if rig.gear_teeth is not None:
        gear, extra = _gear(rng, n, fs, rec, rig, fault.kind)
        if isinstance(extra, tuple):
            glob = force.copy()
            np.add.at(glob, extra[0], extra[1])
        elif extra is not None:
            glob = force + extra

    # Structural modes: one resonator per mode on the excitation that reaches it.
    responses = []
    for mode in rig.modes:
        exc = glob if mode.path == "all" else force
        if impacts is not None and mode.path in ("all", fault.location):
            exc = exc.copy()
            np.add.at(exc, impacts[0], math.exp(-mode.freq / _CORNER_HZ[fault.kind]) * impacts[1])
        responses.append(_resonate(exc, fs, mode.freq, mode.zeta))
    jitter = 1.0 + 0.1 * rng.standard_normal((rig.channels, len(rig.modes)))
    out = np.empty((rig.channels, n))
    tmp = np.empty(n)
    for c in range(rig.channels):
        y = out[c]
        y[:] = direct
        terms = [(rig.gear_gains[c], gear)] if gear is not None else []
        terms += [
            (m.gains[c] * jitter[c, k], r) for k, (m, r) in enumerate(zip(rig.modes, responses))
        ]
        for gain, x in terms:
            np.multiply(x, gain, out=tmp)
            y += tmp
        rng.standard_normal(out=tmp)
        tmp *= rig.noise[c] * rng.uniform(0.85, 1.15)
        y += tmp
        if rig.room[c]:
            y += (rig.room[c] * rng.uniform(0.85, 1.15)) * _pink(rng, n)
    return out


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _fd_files(name: str) -> Iterator[tuple[str, str, str, np.ndarray]]:
    """``(path, label, group, int16 samples)`` of every file, recording by recording.

    Recordings are computed by a few threads (numpy and scipy release the GIL); each has its own
    seed, so the output does not depend on the scheduling.
    """
    rig = _RIGS[name]
    spec = SYNTH_DATASETS[name]
    seg = int(round(SEGMENT_SECONDS * spec.sample_rate))
    recs = fd_recordings(name)

    def pcm(k: int) -> np.ndarray:
        ci, r = divmod(k, rig.recordings)
        return _to_pcm16(_fd_signal(name, recs[k], ci, r), rig.full_scale)

    pool = ThreadPoolExecutor(_workers())
    try:
        for rec, x in zip(recs, pool.map(pcm, range(len(recs)))):
            for c in range(rig.channels):
                group = f"{rec.name}_ch{c + 1}"
                for j in range(rig.segments):
                    yield f"{group}_{j:02d}.wav", rec.label, group, x[c, j * seg : (j + 1) * seg]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_fd(name: str, folder: Path) -> None:
    rows: list[list[object]] = []
    for path, label, group, pcm in _fd_files(name):
        _write_wav(folder / path, pcm, SYNTH_DATASETS[name].sample_rate)
        rows.append([path, label, group])
    rows.sort()
    (folder / "manifest.csv").write_text(_csv_text(["path", "label", "group"], rows), "utf-8")
    cond = []
    for rec in fd_recordings(name):
        g = rec.bearing
        f = rec.shaft_hz
        cond.append(
            [
                rec.name,
                rec.label,
                f"{f:.6f}",
                f"{rec.severity:.6f}",
                g.designation,
                f"{g.bpfo(f):.6f}",
                f"{g.bpfi(f):.6f}",
                f"{g.bsf(f):.6f}",
                f"{g.ftf(f):.6f}",
                "" if rec.mesh_hz is None else f"{rec.mesh_hz:.6f}",
            ]
        )
    header = ["recording", "label", "shaft_hz", "severity", "bearing"]
    header += ["bpfo_hz", "bpfi_hz", "bsf_hz", "ftf_hz", "mesh_hz"]
    (folder / "conditions.csv").write_text(_csv_text(header, cond), "utf-8")


# ------------------------------------------------------------------------------------------------
# anomaly detection (DCASE 2022+ dev layout)
# ------------------------------------------------------------------------------------------------

_AD_TRAIN = {"source": 20, "target": 4}
_AD_TEST_PER_CELL = 5  # per (domain, label)
_AD_SOURCE_SETTINGS = (1, 2, 3)
_AD_TARGET_SETTING = 5
_AD_FULL_SCALE = 0.5


@dataclass(frozen=True)
class _Machine:
    """One AD machine type: per section (blade or vane count, nominal shaft Hz)."""

    kind: str  # fan or pump
    attribute: str  # spd or ld
    sections: tuple[tuple[int, float], ...]
    anomalies: tuple[str, ...]


_MACHINES: dict[str, _Machine] = {
    "synthfan": _Machine(
        "fan", "spd", ((5, 23.0), (7, 17.0)), ("imbalance", "blade", "bearing", "rub")
    ),
    "synthpump": _Machine(
        "pump", "ld", ((5, 24.5), (6, 29.0)), ("cavitation", "clog", "leak", "bearing")
    ),
}

_G6202 = BearingGeometry("6202", 8, 6.0, 25.0)


@functools.cache
def _butter(lo: float, hi: float | None, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Second-order Butterworth ``(b, a)``: band-pass ``lo``-``hi`` Hz, or low-pass ``lo`` Hz."""
    if hi is None:
        return butter(2, lo, fs=fs)
    return butter(2, [lo, hi], btype="bandpass", fs=fs)


def _ad_clip(
    machine: str,
    section: int,
    domain: str,
    setting: int,
    anomaly: str | None,
    key: tuple[int, ...],
) -> np.ndarray:
    """One 10-s clip (float64, 16 kHz) of ``machine``; ``anomaly`` None for a normal clip."""
    fs = SYNTH_DATASETS["synth_ad"].sample_rate
    n = int(round(SEGMENT_SECONDS * fs))
    m = _MACHINES[machine]
    rng = _seed("synth_ad", machine, *key)
    blades, base_hz = m.sections[section]
    # Operating point: setting 1..5 scales the speed (fan) or the load (pump; the induction
    # motor slips a little more under load).
    if m.kind == "fan":
        fr = base_hz * (0.85 + 0.1 * setting) * (1.0 + 0.01 * rng.standard_normal())
        load = 1.0
    else:
        fr = base_hz * (1.0 - 0.01 * setting) * (1.0 + 0.01 * rng.standard_normal())
        load = 0.6 + 0.2 * setting
    theta0 = rng.uniform(0.0, 2.0 * math.pi)
    ph = rng.uniform(0.0, 2.0 * math.pi, size=9)
    sev = _log_uniform(rng, 0.08, 1.0) if anomaly else 0.0

    am1 = 0.05 * rng.uniform(0.5, 1.5)
    tone_amp = np.array([1.0, 0.5, 0.25]) * rng.uniform(0.85, 1.15, size=3)
    one_x = 0.05
    noise_amp = 1.0
    if anomaly == "imbalance":
        am1 += 0.4 * sev
        one_x += 2.0 * sev
    elif anomaly == "clog":
        tone_amp[0] *= 1.0 + 1.5 * sev
        am1 += 0.3 * sev
        noise_amp = 1.0 - 0.5 * sev
    # Blade- (vane-) pass tones, modulated once per revolution.
    am = am1 * _tone(fr, theta0 + ph[0], n, fs)
    am += 1.0
    if anomaly == "blade":
        theta = _angle(fr, theta0, n, fs)
        am -= 0.9 * sev * _pulse(theta, ph[1], 2.0 * math.pi / blades / 2.0)
    f_bp = blades * fr
    tones = np.zeros(n)
    for h, a in enumerate(tone_amp, start=1):
        tones += a * _tone(h * f_bp, h * blades * theta0 + ph[1 + h], n, fs)
    x = 0.02 * am * tones
    x += 0.02 * one_x * _tone(fr, theta0 + ph[5], n, fs)
    # Motor hum at twice the line frequency (magnetostriction), 100 and 200 Hz.
    x += 0.004 * _tone(100.0, ph[6], n, fs)
    x += 0.002 * _tone(200.0, ph[7], n, fs)
    # Broadband flow / aerodynamic noise.
    if m.kind == "fan":
        b, a = _butter(300.0, 3500.0, fs)
        flow = lfilter(b, a, rng.standard_normal(n))
        flow *= 1.0 + 0.3 * _tone(f_bp, blades * theta0, n, fs)
        x += 0.03 * noise_amp * flow
    else:
        b, a = _butter(900.0, None, fs)
        x += 0.035 * load * noise_amp * lfilter(b, a, rng.standard_normal(n))
    # Housing modes, excited by broadband force and by the anomalies' impacts.
    exc = 0.002 * rng.standard_normal(n)
    mode_hz = 3100.0 if m.kind == "fan" else 4200.0
    if anomaly == "bearing":
        amp = 0.06 * sev
        exc += _dense(_impacts(rng, n, fs, _G6202.bpfo(fr), lambda tk: np.full(tk.shape, amp)), n)
    elif anomaly == "cavitation":
        rate = rng.uniform(200.0, 600.0)
        k = rng.poisson(rate * SEGMENT_SECONDS)
        idx = rng.integers(0, n, size=k)
        exc = exc + np.bincount(idx, weights=0.02 * sev * rng.exponential(1.0, k), minlength=n)
    x += _resonate(exc, fs, mode_hz, 0.03) + 0.5 * _resonate(exc, fs, 1.7 * mode_hz, 0.02)
    if anomaly == "rub":
        b, a = _butter(4000.0, 7000.0, fs)
        burst = _pulse(_angle(fr, theta0, n, fs), ph[8], 0.4)
        x += 0.02 * sev * burst * lfilter(b, a, rng.standard_normal(n))
    elif anomaly == "leak":
        b, a = _butter(2500.0, 4000.0, fs)
        x += 0.01 * sev * lfilter(b, a, rng.standard_normal(n))
    # Background: factory noise. Target domain: louder and differently coloured.
    if domain == "source":
        bg = 0.012 * _pink(rng, n, 0.97) + 0.003 * rng.standard_normal(n)
    else:
        bg = 0.02 * _pink(rng, n, 0.9) + 0.004 * rng.standard_normal(n)
    return x + bg * rng.uniform(0.85, 1.15)


def _ad_plan() -> Iterator[tuple[str, str, int, str, str, str, int, int, str | None]]:
    """``(machine, split, section, domain, label, name, clip index, setting, anomaly)``."""
    for machine, m in _MACHINES.items():
        for sec in range(len(m.sections)):
            cells = [("train", d, "normal", c) for d, c in _AD_TRAIN.items()]
            cells += [
                ("test", d, lab, _AD_TEST_PER_CELL)
                for d in ("source", "target")
                for lab in ("normal", "anomaly")
            ]
            for split, domain, label, count in cells:
                for i in range(count):
                    if domain == "source":
                        setting = _AD_SOURCE_SETTINGS[i % len(_AD_SOURCE_SETTINGS)]
                    else:
                        setting = _AD_TARGET_SETTING
                    anomaly = m.anomalies[i % len(m.anomalies)] if label == "anomaly" else None
                    fname = (
                        f"section_{sec:02d}_{domain}_{split}_{label}_{i:04d}_"
                        f"{m.attribute}_{setting}.wav"
                    )
                    yield machine, split, sec, domain, label, fname, i, setting, anomaly


def _write_ad(folder: Path) -> None:
    fs = SYNTH_DATASETS["synth_ad"].sample_rate
    codes = {"train": 0, "test": 1, "source": 0, "target": 1, "normal": 0, "anomaly": 1}
    plan = list(_ad_plan())

    def pcm(item: tuple) -> np.ndarray:
        machine, split, sec, domain, label, _, i, setting, anomaly = item
        key = (sec, codes[split], codes[domain], codes[label], i)
        return _to_pcm16(_ad_clip(machine, sec, domain, setting, anomaly, key), _AD_FULL_SCALE)

    pool = ThreadPoolExecutor(_workers())
    try:
        for item, x in zip(plan, pool.map(pcm, plan)):
            machine, split, fname = item[0], item[1], item[5]
            out = folder / "dev_data" / machine / split / fname
            out.parent.mkdir(parents=True, exist_ok=True)
            _write_wav(out, x, fs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------
# writing, atomically
# ------------------------------------------------------------------------------------------------


def _write_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write int16 ``pcm`` as a mono 16-bit PCM WAV file at ``sample_rate`` (Hz)."""
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")


def _marker_ok(folder: Path) -> bool:
    marker = folder / MARKER_FILE
    try:
        return marker.read_text("utf-8").strip() == SYNTH_VERSION
    except OSError:
        return False


def _remove_stale(root: Path, name: str) -> None:
    """Remove temporary folders of interrupted generations older than an hour."""
    now = time.time()
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for p in root.glob(pattern):
            try:
                if now - p.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def generate(name: str, root: Path) -> Path:
    """Write synthetic dataset ``name`` into ``root/<name>/`` and return that folder.

    The dataset is written into a temporary sibling folder and renamed into place at the end,
    so an interrupted generation never leaves a half-written dataset; an existing dataset of
    that name is replaced. The output is byte-identical on every machine.

    Raises:
        RMISError: unknown name, or ``root/<name>`` exists but is not a synthetic dataset.
    """
    spec = _spec(name)
    root = Path(root)
    final = root / name
    if final.exists() and not (final / MARKER_FILE).is_file():
        raise RMISError(
            f"{str(final)!r} exists but is not a synthetic dataset (no {MARKER_FILE} file); "
            "remove it or choose another cache folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary cache folder
        if spec.task == "ad":
            _write_ad(tmp)
        else:
            _write_fd(name, tmp)
        (tmp / MARKER_FILE).write_text(SYNTH_VERSION + "\n", "utf-8")
        _install(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _install(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` folder to ``final``, replacing an older dataset."""
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process installed the same dataset meanwhile: keep theirs if it is current.
        if _marker_ok(final):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            if old is not None and not final.exists():
                os.rename(old, final)  # put the previous dataset back
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure(name: str, root: Path) -> Path:
    """``root/<name>/``, generated first when missing or made by another :data:`SYNTH_VERSION`.

    Raises:
        RMISError: unknown name, or ``root/<name>`` exists but is not a synthetic dataset.
    """
    _spec(name)
    final = Path(root) / name
    if _marker_ok(final):
        return final
    return generate(name, root)


__all__ = [
    "MARKER_FILE",
    "SEGMENT_SECONDS",
    "SYNTH_DATASETS",
    "SYNTH_VERSION",
    "BearingGeometry",
    "Recording",
    "ensure",
    "fd_recordings",
    "generate",
]
