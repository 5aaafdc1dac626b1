"""Who made a request and which projects it may act on (RAM-like, one grant list per access key)."""

from __future__ import annotations

from dataclasses import dataclass

ALL_PROJECTS = "*"


@dataclass(frozen=True)
class Principal:
    access_key_id: str
    projects: frozenset[str]

    def can_act_on(self, project: str) -> bool:
        return self.is_admin or project in self.projects

    @property
    def is_admin(self) -> bool:
        """``"*"`` grants every project, and creating projects."""
        return ALL_PROJECTS in self.projects
