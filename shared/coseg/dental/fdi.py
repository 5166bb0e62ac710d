"""FDI numbering of linked teeth by position: jaw from the predicted type, side from the arch midline, order
along the arch from the midline outward.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np

from coseg.dental.labels import TOOTH_WIDTHS_MM
from coseg.dental.link3d import centroids

__all__ = ["UNNUMBERED_TOOTH_BASE", "number_teeth_fdi"]

logger = logging.getLogger(__name__)


#: Teeth that the FDI heuristic cannot number (more than 8 on one side) get ids 101, 102, ... in tooth volumes.
UNNUMBERED_TOOTH_BASE = 100


_RANK_WARNING = getattr(getattr(np, "exceptions", None), "RankWarning", None) or np.RankWarning


def _arch_midline(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Midline point ``(x0, y0)`` of an arch from tooth centroids (x: RAS left-right, y: RAS anterior).

    A parabola ``y = a x^2 + b x + c`` is fitted (an arch opens posteriorly, so ``a < 0``) and its apex is the
    midline point; when the fit is not an arch (fewer than 3 teeth, ``a >= 0``, apex outside the teeth) the middle
    of the teeth's left-right extent and their most anterior ``y`` are used.
    """
    fallback = (float((x.min() + x.max()) / 2), float(y.max()))
    if len(x) < 3 or np.ptp(x) < 1e-6:
        return fallback
    with warnings.catch_warnings():
        # few or nearly collinear teeth make the fit poorly conditioned: the checks below reject such fits
        warnings.simplefilter("ignore", _RANK_WARNING)
        a, b, c = np.polyfit(x, y, 2)
    if a >= 0:
        return fallback
    apex = -b / (2 * a)
    if not x.min() <= apex <= x.max():
        return fallback
    return float(apex), float(a * apex**2 + b * apex + c)


def _arch_positions(steps: list[np.ndarray], centres: np.ndarray, scale: float) -> list[int]:
    """Tooth positions (1..8) of the teeth of one side from the distances walked along the arch.

    ``steps[0]`` is the distance from the midline point to the first tooth, ``steps[i]`` the distance between teeth
    ``i - 1`` and ``i``; ``centres`` are the template distances of positions 1..8 from the midline. Each tooth
    takes the position whose template distance from the previous tooth (``scale`` times) is closest to the
    walked distance, leaving room for the teeth still to come.
    """
    positions: list[int] = []
    previous = 0.0
    count = len(steps)
    for i, step in enumerate(steps):
        first = positions[-1] + 1 if positions else 1
        last = len(centres) - (count - i - 1)
        options = np.arange(first, last + 1)
        expected = scale * (centres[options - 1] - previous)
        chosen = int(options[np.argmin(np.abs(expected - float(step)))])
        positions.append(chosen)
        previous = centres[chosen - 1]
    return positions


def number_teeth_fdi(teeth: np.ndarray, types: Mapping[int, int], affine: np.ndarray) -> dict[int, int | None]:
    """FDI numbers for 3D teeth from their jaw (type) and position: a documented HEURISTIC.

    The network predicts only upper/lower teeth; numbers come from geometry:

    1. Tooth centroids go to RAS millimetres; teeth of type 0 join the jaw whose mean height (RAS ``z``) is nearer.
    2. Per jaw, the midline point is the apex of a parabola fitted to the centroids in the axial plane; teeth with
       RAS ``x`` above it are on the patient's right (quadrant 1 upper, 4 lower), the others on the left (2, 3).
    3. Per side, teeth are ordered along the arch by the angle, seen from the arch's mean centroid, between the
       anterior direction and the tooth (incisors first, molars last).
    4. Positions 1..8 come from the distances walked along the arch (midline point -> first tooth -> next tooth
       ...) compared with a template of average crown widths (:data:`coseg.dental.labels.TOOTH_WIDTHS_MM`) scaled by
       the jaw's median ratio of neighbour distance to template distance: a walk much longer than the next
       template step skips a missing tooth. With no gap, teeth are simply numbered 1, 2, 3 ... from the midline.

    Teeth that drifted into a gap, or many missing teeth, mislead step 4; a side with more than 8 teeth gets
    ``None`` for the ones beyond the eighth.

    Args:
        teeth: ``(I, J, K)`` integer 3D tooth ids (0 background).
        types: id -> type (1 upper, 2 lower, 0 unknown) for the ids to number.
        affine: ``(4, 4)`` voxel-to-RAS affine of ``teeth``.

    Returns:
        id -> FDI number, or ``None`` for teeth the heuristic cannot number.

    Raises:
        ValueError: on a bad affine or a type outside {0, 1, 2}.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be (4, 4), got {affine.shape}")
    bad = {i: t for i, t in types.items() if t not in (0, 1, 2)}
    if bad:
        raise ValueError(f"tooth types must be 0, 1 or 2, got {bad}")
    centres = centroids(np.asarray(teeth), list(types))
    world = {i: affine[:3, :3] @ c + affine[:3, 3] for i, c in centres.items()}
    jaw = {i: types[i] for i in world if types[i] in (1, 2)}
    untyped = [i for i in world if types[i] == 0]
    if untyped:
        heights = {t: [world[i][2] for i in jaw if jaw[i] == t] for t in (1, 2)}
        if heights[1] and heights[2]:
            ref_up, ref_low = np.mean(heights[1]), np.mean(heights[2])
        else:
            mid = float(np.median([w[2] for w in world.values()]))
            ref_up, ref_low = mid + 1.0, mid - 1.0
        for i in untyped:
            jaw[i] = 1 if abs(world[i][2] - ref_up) <= abs(world[i][2] - ref_low) else 2
    numbers: dict[int, int | None] = {i: None for i in types}
    for jaw_type, (right_q, left_q) in ((1, (1, 2)), (2, (4, 3))):
        members = [i for i in jaw if jaw[i] == jaw_type]
        if not members:
            continue
        widths = np.asarray(TOOTH_WIDTHS_MM[jaw_type])
        template = np.cumsum(widths) - widths / 2
        x = np.array([world[i][0] for i in members])
        y = np.array([world[i][1] for i in members])
        x0, y0 = _arch_midline(x, y)
        angle = np.arctan2(np.abs(x - x0), y - float(y.mean()))
        walks: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        ratios: list[float] = []
        for quadrant, side in ((right_q, x > x0), (left_q, x <= x0)):
            order = [members[k] for k in np.flatnonzero(side)[np.argsort(angle[side], kind="stable")]]
            points = [np.array([x0, y0])] + [world[i][:2] for i in order]
            steps = [float(np.linalg.norm(b - a)) for a, b in zip(points[:-1], points[1:])]
            walks[quadrant] = (order, steps)
            ratios += [steps[k] / (template[k] - template[k - 1]) for k in range(1, min(len(steps), len(template)))]
        scale = float(np.median(ratios)) if ratios else 1.0
        for quadrant, (order, steps) in walks.items():
            if len(order) > len(template):
                logger.warning(
                    "%d teeth on the side of quadrant %d; the extra ones stay unnumbered", len(order), quadrant
                )
                positions = list(range(1, len(template) + 1))
            elif ratios:
                positions = _arch_positions(steps, template, scale)
            else:
                positions = list(range(1, len(order) + 1))
            for tooth, position in zip(order, positions):
                numbers[tooth] = 10 * quadrant + position
    return numbers
