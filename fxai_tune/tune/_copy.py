"""Copy studies between storages (``fxai-tune copy``), on Optuna's `copy_study`.

A study started on SQLite moves to PostgreSQL (or Redis) when it grows: `copy_study` carries
the directions, the study's user and system attributes (metric names, artifact records), and
every trial with its parameters, values, intermediate values, user and system attributes
(artifact records ``artifacts:*``, ``retry_history``, ``failed_trial``). The artifact files
stay where ``artifact_dir`` keeps them; the copied records point at the same ids.
"""

from __future__ import annotations

import warnings

import optuna

from fxai_tune.tune._storage import StorageError, find_study, make_storage, mask_password

__all__ = ["copy_studies"]


def copy_studies(from_url: str, to_url: str, *, study_name: str | None = None) -> list[str]:
    """Copy ``study_name`` (default: every study) from ``from_url`` to ``to_url``.

    The source is only read. Nothing is copied when a study of that name already exists in
    the target; a copy that fails half-way is deleted from the target again.

    Returns:
        The names of the studies copied.

    Raises:
        StorageError: For a bad or unreachable URL, the same storage twice, a study missing
            from the source or already in the target (one line, passwords masked).

    Example:
        >>> copy_studies("sqlite:///small.db", "postgresql://bob@db:5432/optuna")  # doctest: +SKIP
        ['eurusd-ppo']
    """
    if from_url == to_url:
        raise StorageError(
            f"--from and --to are the same storage {mask_password(from_url)!r}; "
            "valid: two different storages"
        )
    source, names = find_study(from_url, study_name or "")
    if study_name is not None and source is None:
        raise StorageError(
            f"no study {study_name!r} in {mask_password(from_url)}; valid: "
            f"{names or 'none stored there'}"
        )
    wanted = [study_name] if study_name is not None else names
    if not wanted:
        raise StorageError(f"no study in {mask_password(from_url)} to copy")
    _, existing = find_study(to_url, "")
    clash = sorted(set(wanted) & set(existing))
    if clash:
        raise StorageError(
            f"study {clash[0]!r} already exists in {mask_password(to_url)}; refusing to "
            "overwrite it (delete it there or copy to another storage)"
        )
    from_storage = make_storage(from_url)
    to_storage = make_storage(to_url)
    for name in wanted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.copy_study(
                    from_study_name=name, from_storage=from_storage, to_storage=to_storage
                )
        except Exception:
            _delete_partial(to_storage, name)
            raise
    return wanted


def _delete_partial(storage: optuna.storages.BaseStorage, name: str) -> None:
    try:
        storage.delete_study(storage.get_study_id_from_name(name))
    except KeyError:
        pass
