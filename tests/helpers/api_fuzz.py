"""Every schemathesis check against a running service, from its own OpenAPI document.

`fuzz(base_url, seconds)` is `st run BASE_URL/openapi.json --checks all --seed SEED
--max-time SECONDS` from Python: the same engine and phases (examples, coverage, fuzzing,
stateful), every check (no 5xx; every status, content type, header and body as the document
says; schema-valid requests accepted, schema-invalid ones refused; unsupported methods
answered 405 with Allow...), and on top of them this project's own rule that every 4xx is
JSON `{"error": "<message>"}`. Used against `keras_vae.serving.server` and the Ray Serve app.

Settings say what the document cannot:

* the path parameters `{name}` and `{version}` are the served model's in half of the
  cases (a dictionary of known values), so the requests get past the 404;
* infer's request fits the schema but not the model when its tensor's name, datatype,
  shape or data count is not the model's (the Open Inference Protocol answers 400, and
  JSON Schema cannot say "as many numbers as the shape's product"), so 400 is one of the
  answers a schema-valid infer request may get;
* with ``per_image_labels`` (a class-conditional model), ``/v1/score`` needs as many
  ``labels`` as ``images``, which JSON Schema cannot say either, so 422 is one of the
  answers a schema-valid score request may get there.
"""

import collections
import json

import schemathesis
from schemathesis import engine
from schemathesis.engine import Status, events

SEED = 20261130


@schemathesis.check
def error_body(ctx, response, case):
    """Every 4xx is JSON ``{"error": "<non-empty message>"}``."""
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise AssertionError(f"a {response.status_code} without a JSON body") from None
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
            raise AssertionError(f"a {response.status_code} whose body is not {{'error': ...}}: {body!r}")
    return None


def fuzz_config(seconds, known_path_parameters=None, seed=SEED, workers=1, per_image_labels=False):
    """The `schemathesis.Config` of `st run --checks all --seed SEED --max-time SECONDS`, plus the above."""
    known = known_path_parameters or {}
    score = [{"include-path-regex": "/v1/score$",
              "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 422, 503]}}}]
    data = {
        "seed": seed,
        "max-time": seconds,
        "workers": workers,
        "dictionaries": {f"known-{name}": {"values": [value]} for name, value in known.items()},
        "parameters": {f"path.{name}": {"dictionary": f"known-{name}", "probability": 0.5}
                       for name in known},
        "operations": [{
            "include-path-regex": "/infer$",
            "checks": {"positive_data_acceptance": {"expected-statuses": [
                "2xx", 400, 404, 503]}},
        }] + (score if per_image_labels else []),
    }
    config = schemathesis.Config.from_dict(data)
    config.projects.override.checks.update(included_check_names=["all"])
    return config


def fuzz(base_url, seconds, known_path_parameters=None, seed=SEED, workers=1, per_image_labels=False):
    """Runs every check for `seconds`; returns a Counter of the statuses the service answered.

    Raises AssertionError listing every failure (operation, check, message, and a curl
    command that reproduces it) and every error (e.g. an operation the document describes
    wrongly), if there are any.
    """
    config = fuzz_config(seconds, known_path_parameters, seed, workers, per_image_labels)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    statuses = collections.Counter()
    problems = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            recorder = event.recorder
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    statuses[interaction.response.status_code] += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        problems.append(_describe_failure(recorder, case_id, check))
        elif isinstance(event, events.NonFatalError):
            problems.append(f"error in {event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise AssertionError(f"schemathesis could not run: {event.exception!r}")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise AssertionError(f"{len(unique)} failures or errors after {sum(statuses.values())} "
                             f"requests (statuses {dict(sorted(statuses.items()))}):\n\n"
                             + "\n\n".join(unique))
    return statuses


def _describe_failure(recorder, case_id, check):
    failure = check.failure_info.failure if check.failure_info else None
    title = getattr(failure, "title", "") or check.name
    message = getattr(failure, "message", "")
    case = recorder.cases.get(case_id)
    command = ""
    if case is not None and check.failure_info is not None:
        command = getattr(check.failure_info, "code_sample", "") or ""
    label = case.value.operation.label if case is not None else recorder.label
    interaction = recorder.interactions.get(case_id)
    answer = "" if interaction is None or interaction.response is None else (
        f"[{interaction.response.status_code}] {interaction.response.content[:300]!r}")
    return f"{label}: {check.name}: {title}\n{message}\n{answer}\n{command}".rstrip()
