"""The ``prices:`` section of the gate's config: what a cost report charges, in US dollars.

Defaults are Google's public list prices, looked up on 2026-11-25 (docs/admin.md says where):

- ``storage_gb_month``: Cloud Storage, Standard class, a regional bucket in us-central1 (Iowa), per
  GiB-month ($0.020).
- ``class_a_per_1000``, ``class_b_per_1000``: Standard-class operations of a regional bucket, per
  1,000 ($0.005 Class A: inserts, lists, patches; $0.0004 Class B: gets). Multi-region buckets pay
  more for Class A.
- ``egress_gb``: data transfer out to the internet, first TiB of a month, per GiB ($0.12). Transfer
  within the bucket's region is free: set 0 when the gate and the CI jobs run there (GKE in the
  same region); keep it for jobs outside Google Cloud.
- ``cpu_vcpu_hour``: what a CPU hour saved is worth: an on-demand N2 vCPU in us-central1
  ($0.031611 per vCPU-hour). Set your own nodes' price, e.g. E2 ($0.021812) or spot.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PriceSettings"]


class PriceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    storage_gb_month: float = Field(default=0.020, ge=0, description="USD per GiB-month of stored bytes")
    class_a_per_1000: float = Field(default=0.005, ge=0, description="USD per 1,000 Class A operations")
    class_b_per_1000: float = Field(default=0.0004, ge=0, description="USD per 1,000 Class B operations")
    egress_gb: float = Field(default=0.12, ge=0, description="USD per GiB sent to clients")
    cpu_vcpu_hour: float = Field(default=0.031611, ge=0, description="USD per vCPU-hour of compute saved")
