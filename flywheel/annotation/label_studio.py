"""Human labelling in Label Studio (through label-studio-sdk).

One Label Studio project per labelling batch (an iteration's requests): the labelling
config is generated from the protocol — one single-choice question per requested
category, with "not applicable", shown only when its parent question (if asked in the same
batch) has an answer that allows it. Each image is a task carrying the image's URL (an
:class:`flywheel.annotation.image_server.ImageServer` over the content store, or any server
of content-addressed images) and the AI annotator's answers as pre-annotations
(predictions), so people confirm or correct rather than start from nothing. A batch is complete when every task has an annotation; its answers are then
read back as labels. The batch-to-project mapping is kept in a JSON file, so a restarted
run finds its projects instead of creating them again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

from flywheel.annotation.labelling import NOT_APPLICABLE, Label, LabelRequest
from flywheel.protocol import Protocol

NA_CHOICE = "not applicable"


def labelling_config(protocol: Protocol, categories: list[str]) -> str:
    lines = ['<View>', '  <Image name="image" value="$image" zoom="true"/>']
    for name in categories:
        cat = protocol.categories[name]
        visible = ""
        parents = [p for p in cat.requires if p in categories]
        if len(parents) == 1:  # Label Studio can condition a question on one parent choice
            p = parents[0]
            visible = (f' visibleWhen="choice-selected" whenTagName={quoteattr(p)}'
                       f' whenChoiceValue={quoteattr(",".join(cat.requires[p]))}')
        lines.append(f"  <Header value={quoteattr(cat.question)}/>")
        lines.append(f'  <Choices name={quoteattr(name)} toName="image" choice="single" showInline="true"{visible}>')
        for answer in (*cat.answers, NA_CHOICE):
            lines.append(f"    <Choice value={quoteattr(answer)}/>")
        lines.append("  </Choices>")
    lines.append("</View>")
    return "\n".join(lines)


class LabelStudioLabeller:
    name = "label_studio"

    def __init__(self, url: str, token: str, protocol: Protocol, image_url: Callable[[str], str] | None, state_file: str | Path,
                 project_prefix: str = "CosmicMan annotation"):
        """``image_url``: record id -> the URL Label Studio shows it from (None: only reading answers back)."""
        from label_studio_sdk import LabelStudio

        if not token:
            raise ValueError("Label Studio: no API token (set the environment variable named by label_studio_token_env)")
        self.client = LabelStudio(base_url=url, api_key=token)
        self.protocol = protocol
        self.image_url = image_url
        self.state_file = Path(state_file)
        self.prefix = project_prefix

    def _state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save_state(self, state: dict) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.state_file)

    def project_id(self, batch: str) -> int | None:
        return self._state().get(batch, {}).get("project")

    def submit(self, requests: list[LabelRequest], batch: str,
               hints: Mapping[str, Mapping[str, tuple[str, float]]] | None = None) -> None:
        if self.project_id(batch) is not None:
            return  # submitted before a restart: the project and its tasks exist
        if self.image_url is None:
            raise ValueError("Label Studio: submitting tasks needs image URLs (no image server configured)")
        categories = [c for c in self.protocol.categories if c in {r.category for r in requests}]
        by_record: dict[str, list[str]] = {}
        for r in requests:
            by_record.setdefault(r.record_id, []).append(r.category)
        project = self.client.projects.create(title=f"{self.prefix} {batch}", label_config=labelling_config(self.protocol, categories),
                                              description=f"{len(by_record)} images, {len(categories)} questions")
        tasks = []
        for rid, cats in by_record.items():
            task = {"data": {"image": self.image_url(rid), "record_id": rid}}
            hint = (hints or {}).get(rid, {})
            result = [{"from_name": c, "to_name": "image", "type": "choices", "value": {"choices": [hint[c][0]]}}
                      for c in cats if c in hint]
            if result:
                task["predictions"] = [{"model_version": "annotator", "result": result,
                                        "score": float(sum(hint[c][1] for c in cats if c in hint) / len(result))}]
            tasks.append(task)
        self.client.projects.import_tasks(id=project.id, request=tasks)
        state = self._state()
        state[batch] = {"project": project.id, "requests": [[r.record_id, r.category] for r in requests]}
        self._save_state(state)

    def batches(self, iteration: str) -> list[str]:
        """The submitted batches of an iteration: its first phase ``iteration`` and later ones
        ``iteration.d<depth>`` (children asked once their parents are answered)."""
        return sorted(b for b in self._state() if b == iteration or b.startswith(iteration + "."))

    def pending(self, batch: str) -> int | None:
        """Tasks of ``batch`` nobody has answered yet (None: the batch was never submitted)."""
        entry = self._state().get(batch)
        if entry is None:
            return None
        tasks = self.client.tasks.list(project=entry["project"], fields="all")
        return sum(not [a for a in (t.annotations or []) if not _get(a, "was_cancelled")] for t in tasks)

    def collect(self, batch: str) -> list[Label] | None:
        entry = self._state().get(batch)
        if entry is None:
            return None
        answers: dict[tuple[str, str], str] = {}
        for task in self.client.tasks.list(project=entry["project"], fields="all"):
            done = [a for a in (task.annotations or []) if not _get(a, "was_cancelled")]
            if not done:
                return None  # people are not finished with this batch
            latest = max(done, key=lambda a: str(_get(a, "updated_at") or _get(a, "created_at") or ""))
            rid = task.data["record_id"]
            for item in _get(latest, "result") or []:
                choices = (item.get("value") or {}).get("choices") or []
                if choices:
                    answers[(rid, item["from_name"])] = NOT_APPLICABLE if choices[0] == NA_CHOICE else choices[0]
        return [Label(rid, cat, answers.get((rid, cat), NOT_APPLICABLE), self.name) for rid, cat in entry["requests"]]


def _get(obj, key: str):
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
