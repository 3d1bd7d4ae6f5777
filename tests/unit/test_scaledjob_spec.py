"""ScaledJob parsing (scaler.jobs.spec), the Job Tidal creates from it (scaler.jobs.render) and
`tidal check` on ScaledJobs: KEDA's documented examples parse unchanged; bad specs name their
field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from scaler.jobs.decide import JobCounts, TriggerReading, decide_jobs
from scaler.jobs.render import check_failed, job_body, poll_conditions, status_patch
from scaler.jobs.spec import parse_scaled_job, read_scaled_job
from scaler.manifest_set import Document, check_documents

# KEDA's docs, concepts/scaling-jobs.md "Sample" (the Secret it reads left out), unchanged.
KEDA_SAMPLE = """
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: rabbitmq-consumer
  namespace: default
spec:
  jobTargetRef:
    template:
      spec:
        containers:
        - name: demo-rabbitmq-client
          image: demo-rabbitmq-client:1
          imagePullPolicy: Always
          command: ["receive",  "amqp://user:PASSWORD@rabbitmq.default.svc.cluster.local:5672"]
          envFrom:
            - secretRef:
                name: rabbitmq-consumer-secrets
        restartPolicy: Never
    backoffLimit: 4
  pollingInterval: 10             # Optional. Default: 30 seconds
  maxReplicaCount: 30             # Optional. Default: 100
  successfulJobsHistoryLimit: 3   # Optional. Default: 100. How many completed jobs should be kept.
  failedJobsHistoryLimit: 2       # Optional. Default: 100. How many failed jobs should be kept.
  scalingStrategy:
    strategy: "custom"                        # Optional. Default: default.
    customScalingQueueLengthDeduction: 1      # Optional.
    customScalingRunningJobPercentage: "0.5"  # Optional.
  triggers:
  - type: rabbitmq
    metadata:
      queueName: hello
      host: RabbitMqHost
      queueLength  : '5'
"""

# KEDA's reference/scaledjob-spec.md, every field set, the {placeholders} filled in.
KEDA_SPEC = """
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: my-scaled-job
  labels:
    my-label: my-label-value                  # Optional. ScaledJob labels are applied to child Jobs
  annotations:
    autoscaling.keda.sh/paused: "true"        # Optional. Use to pause autoscaling of Jobs
    my-annotation: my-annotation-value        # Optional. Applied to child Jobs
spec:
  jobTargetRef:
    parallelism: 1
    completions: 1
    activeDeadlineSeconds: 600
    backoffLimit: 6
    template:
      spec:
        containers:
        - name: worker
          image: worker:1
  pollingInterval: 30                         # Optional. Default: 30 seconds
  successfulJobsHistoryLimit: 5               # Optional. Default: 100.
  failedJobsHistoryLimit: 5                   # Optional. Default: 100.
  envSourceContainerName: worker              # Optional.
  minReplicaCount: 10                         # Optional. Default: 0
  maxReplicaCount: 100                        # Optional. Default: 100
  rolloutStrategy: gradual                    # Deprecated: Use rollout.strategy instead.
  rollout:
    strategy: gradual                         # Optional. Default: default.
    propagationPolicy: foreground             # Optional. Default: background.
  scalingStrategy:
    strategy: "custom"                        # Optional. Default: default.
    customScalingQueueLengthDeduction: 1      # Optional.
    customScalingRunningJobPercentage: "0.5"  # Optional.
    pendingPodConditions:                     # Optional.
      - "Ready"
      - "PodScheduled"
      - "AnyOtherCustomPodCondition"
    multipleScalersCalculation : "max" # Optional. Default: max.
  triggers:
  - type: redis
    metadata:
      address: redis:6379
      listName: jobs
      listLength: "5"
"""


def test_keda_sample_parses_unchanged() -> None:
    sj = parse_scaled_job(yaml.safe_load(KEDA_SAMPLE))
    assert (sj.namespace, sj.name, sj.polling_interval) == ("default", "rabbitmq-consumer", 10)
    assert (sj.successful_history_limit, sj.failed_history_limit) == (3, 2)
    assert (sj.min_replica_count, sj.max_replica_count) == (0, 30)
    assert sj.scaling.effective == "custom"
    assert (sj.scaling.queue_length_deduction, sj.scaling.running_job_percentage) == (1, 0.5)
    assert [t.type for t in sj.triggers] == ["rabbitmq"]
    assert sj.job_spec["backoffLimit"] == 4


def test_keda_spec_reference_parses_unchanged() -> None:
    sj = parse_scaled_job(yaml.safe_load(KEDA_SPEC))
    assert sj.paused
    assert (sj.rollout, sj.propagation) == ("gradual", "foreground")
    assert sj.scaling.pending_pod_conditions == (
        "Ready",
        "PodScheduled",
        "AnyOtherCustomPodCondition",
    )
    assert sj.scaling.multiple_scalers_calculation == "max"
    assert (sj.min_replica_count, sj.max_replica_count) == (10, 90)
    assert sj.env_source_container_name == "worker"


def test_defaults_are_kedas() -> None:
    sj = parse_scaled_job(
        {
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {
                "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c"}]}}},
                "triggers": [{"type": "redis", "metadata": {}}],
            },
        }
    )
    assert sj.polling_interval == 30
    assert (sj.successful_history_limit, sj.failed_history_limit) == (100, 100)
    assert (sj.rollout, sj.propagation, sj.scaling.strategy) == ("default", "background", "default")
    assert sj.scaling.multiple_scalers_calculation == "max"
    assert not sj.paused


def minimal(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": "bad", "namespace": "n"},
        "spec": {
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c"}]}}},
            "triggers": [{"type": "redis", "metadata": {"listName": "l"}}],
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("body", "path", "text"),
    [
        pytest.param(
            {"metadata": {"name": "x"}, "spec": {"triggers": [{"type": "redis"}]}},
            "spec.jobTargetRef",
            "ScaledJob.spec.jobTargetRef not found",
            id="no-job-target-ref",
        ),
        pytest.param(
            minimal(triggers=[]), "spec.triggers", "no triggers defined", id="no-triggers"
        ),
        pytest.param(
            minimal(triggers=[{"type": "redis", "metricType": "Value"}]),
            "spec.triggers[0].metricType",
            "Cannot set metricType in ScaledJob triggers",
            id="metric-type-set",
        ),
        pytest.param(
            minimal(scalingStrategy={"strategy": "fastest"}),
            "spec.scalingStrategy.strategy",
            "'fastest' is not supported",
            id="unknown-strategy",
        ),
        pytest.param(
            minimal(scalingStrategy={"multipleScalersCalculation": "median"}),
            "spec.scalingStrategy.multipleScalersCalculation",
            "'median' is not supported",
            id="unknown-calculation",
        ),
        pytest.param(
            minimal(rollout={"propagationPolicy": "orphan"}),
            "spec.rollout.propagationPolicy",
            "'orphan' is not supported",
            id="unknown-propagation",
        ),
        pytest.param(
            minimal(pollingInterval=0),
            "spec.pollingInterval",
            "greater than or equal to 1",
            id="polling-0",
        ),
        pytest.param(
            minimal(jobTargetRef={"template": {"spec": {"containers": []}}}),
            "spec.jobTargetRef.template.spec.containers",
            "at least one container",
            id="no-container",
        ),
        pytest.param(
            minimal(
                jobTargetRef={"template": {"spec": {"containers": [{}], "restartPolicy": "Always"}}}
            ),
            "spec.jobTargetRef.template.spec.restartPolicy",
            "OnFailure",
            id="restart-always",
        ),
    ],
)
def test_bad_spec_names_its_field(body: dict[str, Any], path: str, text: str) -> None:
    _, problems = read_scaled_job(body)
    assert any(p.path == path and text in p.message for p in problems), problems


def test_job_body_is_kedas() -> None:
    """KEDA's generateJobs: generateName, labels (the ScaledJob's too, minus the excluded
    ones), the generation annotation, OnFailure by default, the ScaledJob as controller."""
    raw = yaml.safe_load(KEDA_SPEC)
    raw["metadata"].update(namespace="ns", uid="u-1", generation=3)
    raw["metadata"]["labels"]["secret-label"] = "x"
    raw["metadata"]["annotations"]["scaledjob.keda.sh/job-excluded-labels"] = "secret-label"
    body = job_body(parse_scaled_job(raw))
    meta = body["metadata"]
    assert meta["generateName"] == "my-scaled-job-"
    assert meta["labels"]["scaledjob.keda.sh/name"] == "my-scaled-job"
    assert meta["labels"]["my-label"] == "my-label-value"
    assert "secret-label" not in meta["labels"]
    assert meta["annotations"]["scaledjob.keda.sh/generation"] == "3"
    assert meta["annotations"]["my-annotation"] == "my-annotation-value"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledJob",
            "name": "my-scaled-job",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    template = body["spec"]["template"]
    assert template["metadata"]["labels"]["scaledjob.keda.sh/name"] == "my-scaled-job"
    assert template["spec"]["restartPolicy"] == "OnFailure"
    assert body["spec"]["activeDeadlineSeconds"] == 600


def test_min_replica_documented_example() -> None:
    """KEDA's docs: minReplicaCount 2, two Jobs running, 3 messages at target 1: 3 more Jobs."""
    sj = parse_scaled_job(minimal(minReplicaCount=2))
    decision = decide_jobs(sj, [TriggerReading(3, 1, True)], JobCounts(2, 0))
    assert decision.create == 3


@pytest.mark.parametrize(
    ("active", "error", "ready", "active_status"),
    [
        pytest.param(True, False, ("True", "ScaledJobReady"), "True", id="active"),
        pytest.param(False, False, ("True", "ScaledJobReady"), "False", id="inactive"),
        pytest.param(True, True, ("Unknown", "PartialTriggerError"), "True", id="partial-error"),
        pytest.param(False, True, ("False", "TriggerError"), "False", id="all-failing"),
    ],
)
def test_poll_conditions_are_kedas(
    active: bool, error: bool, ready: tuple[str, str], active_status: str
) -> None:
    sj = parse_scaled_job(minimal())
    got = {c["type"]: c for c in poll_conditions(sj, active, error)}
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ready
    assert got["Active"]["status"] == active_status


def test_status_is_not_written_when_nothing_changed() -> None:
    sj = parse_scaled_job(minimal())
    conditions = check_failed(sj, "boom")
    patch = status_patch(sj, conditions, None)
    assert patch == {"status": {"conditions": conditions}}
    raw = minimal()
    raw["status"] = patch["status"]
    assert status_patch(parse_scaled_job(raw), conditions, None) is None


async def test_tidal_check_validates_scaled_jobs() -> None:
    docs = [
        Document("sj.yaml", 0, yaml.safe_load(KEDA_SPEC)),
        Document("sj.yaml", 1, minimal(scalingStrategy={"strategy": "fastest"})),
        Document("sj.yaml", 2, minimal(triggers=[{"type": "redis", "metadata": {}}])),
    ]
    findings, checked = await check_documents(docs)
    assert checked == 3
    lines = [f.line() for f in findings]
    assert any("sj.yaml:1: ScaledJob n/bad: spec.scalingStrategy.strategy" in x for x in lines)
    # the trigger's metadata is parsed as the daemon parses it: listName is required
    assert any(x.startswith("sj.yaml:2: ScaledJob n/bad: spec.triggers[0]") for x in lines)
    assert not [x for x in lines if x.startswith("sj.yaml:0:")]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        pytest.param([{"name": "REDIS_ADDRESS", "value": "127.0.0.1:6379"}], False, id="set"),
        pytest.param([], True, id="missing"),
    ],
)
async def test_tidal_check_reads_env_from_the_job_template(
    env: list[dict[str, str]], problem: bool
) -> None:
    body = minimal(
        jobTargetRef={"template": {"spec": {"containers": [{"name": "c", "env": env}]}}},
        triggers=[
            {"type": "redis", "metadata": {"addressFromEnv": "REDIS_ADDRESS", "listName": "l"}}
        ],
    )
    findings, _ = await check_documents([Document("sj.yaml", 0, body)])
    # set: the address is read from the template's container, so nothing is reported
    assert bool([f for f in findings if f.problem.field_path.startswith("spec.triggers[0]")]) is (
        problem
    ), findings
