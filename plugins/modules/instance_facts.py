#!/usr/bin/python
# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: instance_facts
short_description: Decide the instance type of a host and load its hardware profile
version_added: 0.1.0
description:
  - Decides the EC2 instance type of the host and sets the C(mlhpc_instance) fact with the
    matching profile from the collection's instance profile table (accelerators, EFA
    interfaces, NVSwitch, CPU topology, NCCL bandwidth floor).
  - An O(instance_type) given by the inventory wins. Otherwise the module asks the instance
    metadata service with IMDSv2 (a session token from C(PUT /latest/api/token), then
    C(GET /latest/meta-data/instance-type)), retrying with a short backoff because the IMDS
    can be slow to answer early in boot.
  - Hosts that are not EC2 instances (on-premises, containers, test hosts) get
    C(source=none) and no profile, unless O(required=true).
  - The module only reads; it never changes the host.
author:
  - mlhpc.cluster maintainers
options:
  instance_type:
    description:
      - The instance type, usually from an inventory variable. When set, the IMDS is not asked.
      - It must be a type the profile table knows, unless O(allow_unknown=true).
      - An empty string counts as not set, so an inventory variable that defaults to an empty
        string can be passed as it is.
    type: str
  required:
    description:
      - Fail when there is no O(instance_type) and the IMDS does not give the instance type.
      - When false, such a host gets C(source=none) and C(profile=null).
    type: bool
    default: false
  allow_unknown:
    description:
      - Accept an instance type the profile table does not know, with C(profile=null) and a
        warning, instead of failing.
    type: bool
    default: false
  imds_endpoint:
    description:
      - Base URL of the instance metadata service.
      - Use C(http://[fd00:ec2::254]) on IPv6-only subnets.
    type: str
    default: http://169.254.169.254
  imds_timeout:
    description:
      - Seconds to wait for each IMDS request.
    type: float
    default: 2
  imds_retries:
    description:
      - How many times to try again after a failed attempt (0 asks once).
      - Connection errors, timeouts, C(401), C(429) and C(5xx) answers are retried; C(400),
        C(403) and C(404) are final.
    type: int
    default: 3
  imds_retry_delay:
    description:
      - Seconds to wait before the first retry; the wait doubles after each further attempt.
    type: float
    default: 0.5
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
notes:
  - In a container on an EC2 instance the IMDSv2 token answer needs two network hops. If the
    instance's metadata hop limit (C(HttpPutResponseHopLimit)) is 1 the token request times
    out; raise the hop limit to 2 or set O(instance_type).
  - On a host that is not an EC2 instance and where C(169.254.169.254) does not answer at all,
    the defaults wait up to about 12 seconds (4 attempts of 2 seconds plus the pauses) before
    giving C(source=none); set O(instance_type), or O(imds_retries=0), for such hosts.
  - The IMDS session token is used for the one lookup and is never logged or returned.
seealso:
  - plugin: mlhpc.cluster.instance_profile
    plugin_type: filter
    description: The same profile table, for rendering where there is no host to ask.
"""

EXAMPLES = r"""
- name: Decide the instance type (IMDS on EC2, none elsewhere)
  mlhpc.cluster.instance_facts:

- name: Take the instance type from the inventory when it is set
  mlhpc.cluster.instance_facts:
    instance_type: "{{ mlhpc_instance_type | default('') }}"

- name: Require an instance type on compute nodes
  mlhpc.cluster.instance_facts:
    required: true
  when: "'compute' in group_names"

- name: Size the Slurm GRES from the profile
  ansible.builtin.debug:
    msg: "{{ mlhpc_instance.profile.accelerator.count }} x {{ mlhpc_instance.profile.accelerator.model }}"
  when: mlhpc_instance.profile is not none
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: complex
  contains:
    mlhpc_instance:
      description: The instance type of the host, where it came from, and its profile.
      returned: always
      type: complex
      contains:
        instance_type:
          description: The instance type, or null when it could not be decided.
          returned: always
          type: str
          sample: p5.48xlarge
        source:
          description:
            - Where the instance type came from.
            - C(override) from O(instance_type), C(imds) from the metadata service, C(none) when
              neither gave one.
          returned: always
          type: str
          choices: [override, imds, none]
          sample: imds
        profile:
          description:
            - The profile of the instance type from C(plugins/module_utils/instance_profiles.py),
              or null when the type is unknown or not decided.
          returned: always
          type: dict
          sample:
            instance_type: p5.48xlarge
            family: p5
            arch: x86_64
            vcpus: 192
            sockets: 2
            cores_per_socket: 48
            threads_per_core: 2
            memory_mib: 2097152
            accelerator:
              kind: nvidia
              model: H100
              count: 8
              memory_gib: 80
              cuda_arch: "90"
              neuron_cores: 0
            efa_interfaces: 32
            nvswitch: true
            nvlinks_per_gpu: 18
            nvlink_generation: 4
            nccl_busbw_floor_gbps: 800
            efa_late_enumeration: false
            imex: false
imds_error:
  description: Why the IMDS gave no instance type, when it did not and O(required=false).
  returned: when source is none and the IMDS was asked
  type: str
  sample: "the IMDS at http://169.254.169.254 gave no instance type after 4 attempts: timed out"
"""

import http.client
import re
import time
import urllib.error

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    UnknownInstanceType,
    get_profile,
)

TOKEN_PATH = "/latest/api/token"
INSTANCE_TYPE_PATH = "/latest/meta-data/instance-type"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
# The token serves one lookup; a short life is enough.
TOKEN_TTL_SECONDS = 60
# Answers that will not change by asking again.
FINAL_STATUSES = frozenset((400, 403, 404))
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
MAX_ANSWER_BYTES = 4096


class ImdsError(Exception):
    def __init__(self, message, retryable=True):
        super().__init__(message)
        self.retryable = retryable


def _imds_request(method, url, headers, timeout):
    """Send one request to the IMDS and return the body as text; raise ImdsError."""
    try:
        response = open_url(
            url,
            method=method,
            headers=headers,
            timeout=timeout,
            use_proxy=False,
            follow_redirects="none",
            use_netrc=False,
        )
        with response:
            return response.read(MAX_ANSWER_BYTES).decode("utf-8", errors="replace").strip()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ImdsError(
            f"{method} {url} answered {exc.code} {exc.reason}",
            retryable=exc.code not in FINAL_STATUSES,
        ) from None
    except urllib.error.URLError as exc:
        raise ImdsError(f"{method} {url} failed: {exc.reason}") from None
    except (OSError, http.client.HTTPException, UrlsConnectionError) as exc:
        raise ImdsError(f"{method} {url} failed: {exc or type(exc).__name__}") from None


def read_instance_type(endpoint, timeout, retries, retry_delay, sleep=time.sleep):
    """Ask the IMDS (v2) for the instance type, with retries; raise ImdsError."""
    endpoint = endpoint.rstrip("/")
    attempts = 0
    while True:
        attempts += 1
        try:
            token = _imds_request("PUT", endpoint + TOKEN_PATH, {TTL_HEADER: str(TOKEN_TTL_SECONDS)}, timeout)
            if not token:
                raise ImdsError(f"PUT {endpoint}{TOKEN_PATH} answered an empty token")
            value = _imds_request("GET", endpoint + INSTANCE_TYPE_PATH, {TOKEN_HEADER: token}, timeout)
            if not INSTANCE_TYPE_RE.match(value):
                raise ImdsError(
                    f"GET {endpoint}{INSTANCE_TYPE_PATH} answered {value[:64]!r}, "
                    "which is not an instance type",
                    retryable=False,
                )
            return value
        except ImdsError as exc:
            if not exc.retryable or attempts > retries:
                noun = "attempt" if attempts == 1 else "attempts"
                raise ImdsError(
                    f"the IMDS at {endpoint} gave no instance type after {attempts} {noun}: {exc}",
                    retryable=exc.retryable,
                ) from None
        sleep(retry_delay * 2 ** (attempts - 1))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instance_type=dict(type="str"),
            required=dict(type="bool", default=False),
            allow_unknown=dict(type="bool", default=False),
            imds_endpoint=dict(type="str", default="http://169.254.169.254"),
            imds_timeout=dict(type="float", default=2.0),
            imds_retries=dict(type="int", default=3),
            imds_retry_delay=dict(type="float", default=0.5),
        ),
        supports_check_mode=True,
    )
    params = module.params

    if params["imds_timeout"] <= 0:
        module.fail_json(msg=f"imds_timeout must be greater than 0, got {params['imds_timeout']}")
    if params["imds_retries"] < 0:
        module.fail_json(msg=f"imds_retries must be 0 or more, got {params['imds_retries']}")
    if params["imds_retry_delay"] < 0:
        module.fail_json(msg=f"imds_retry_delay must be 0 or more, got {params['imds_retry_delay']}")
    if not params["imds_endpoint"].startswith(("http://", "https://")):
        module.fail_json(
            msg=f"imds_endpoint must be an http:// or https:// URL, got '{params['imds_endpoint']}'"
        )

    result = dict(changed=False)
    instance_type = (params["instance_type"] or "").strip() or None
    if instance_type is not None:
        source = "override"
    else:
        try:
            instance_type = read_instance_type(
                params["imds_endpoint"],
                params["imds_timeout"],
                params["imds_retries"],
                params["imds_retry_delay"],
            )
            source = "imds"
        except ImdsError as exc:
            if params["required"]:
                module.fail_json(
                    msg=(
                        f"cannot decide the instance type: {exc}. Set the instance_type parameter "
                        "(for example from an inventory variable), or check that the IMDS is enabled "
                        "and, when running in a container, that its hop limit (HttpPutResponseHopLimit) "
                        "is at least 2."
                    )
                )
            source = "none"
            result["imds_error"] = str(exc)

    profile = None
    if instance_type is not None:
        try:
            profile = get_profile(instance_type)
        except UnknownInstanceType as exc:
            if not params["allow_unknown"]:
                module.fail_json(msg=str(exc), instance_type=instance_type, source=source)
            module.warn(
                f"instance type '{instance_type}' is not in the instance profile table; profile is null"
            )

    result["ansible_facts"] = dict(
        mlhpc_instance=dict(instance_type=instance_type, source=source, profile=profile),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
