"""Policies as code: KernelPolicy, ExecutionPolicy and the Policy file that holds both."""

from __future__ import annotations

from xpuruntime.policies import vocabulary
from xpuruntime.policies._common import Change
from xpuruntime.policies.execution import AccuracyContract, ExecutionPolicy
from xpuruntime.policies.kernel import DimCondition, KernelPolicy, Preference, Rule
from xpuruntime.policies.policy import MAX_POLICY_BYTES, SCHEMA_VERSION, Policy, coerce_policy

__all__ = [
    "AccuracyContract",
    "Change",
    "DimCondition",
    "ExecutionPolicy",
    "KernelPolicy",
    "MAX_POLICY_BYTES",
    "Policy",
    "Preference",
    "Rule",
    "SCHEMA_VERSION",
    "coerce_policy",
    "vocabulary",
]
