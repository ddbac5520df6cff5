"""Tasks: what an item is, how inputs are packed, the loss, the metric, the pairs and the default
layers of action recognition, video object segmentation and video instance segmentation (:class:`stdyn.tasks.base.Task`)."""
from __future__ import annotations

from stdyn.tasks.action import ACTION, ActionRecognition
from stdyn.tasks.base import Task
from stdyn.tasks.vis import VIS, VideoInstanceSegmentation
from stdyn.tasks.vos import VOS, VideoObjectSegmentation

TASKS: dict[str, Task] = {task.name: task for task in (ACTION, VOS, VIS)}

__all__ = ["ACTION", "TASKS", "VIS", "VOS", "ActionRecognition", "Task", "VideoInstanceSegmentation",
           "VideoObjectSegmentation", "get", "of_world"]


def get(task: str | Task) -> Task:
    """The task called ``task`` (``"action"``, ``"vos"`` or ``"vis"``); a Task is returned as is."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def of_world(world: str) -> Task:
    """The task whose worlds include ``world`` (``"davis+ytvos"`` joins VOS worlds)."""
    for task in TASKS.values():
        if task.owns_world(world):
            return task
    known = "; ".join(f"{task.name}: {', '.join(task.worlds())}" for task in TASKS.values())
    raise ValueError(f"unknown world {world!r}; the worlds of each task are {known}")
