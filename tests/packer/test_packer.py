"""The node image templates (packer/), the image playbook and its roles.

Static checks (fmt, validate per source), bad input, then one end-to-end build of the cpu
flavour with the documented command (make -C packer image) against the EC2 emulator and a
podman host as the build instance, and what that build left on the host and in the emulator.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from ansible_collections.mlhpc.cluster.tests.fixtures.packer_build import (
    PACKER_DIR,
    REGION,
    ROOT,
    TIMINGS,
    VENV_BIN,
    base_env,
    run,
)

FLAVORS = ["gpu", "gpu-dlami", "neuron", "cpu", "pcluster"]
PLAYBOOK_FLAVORS = ["cpu", "gpu", "neuron"]
COLLECTION_VERSION = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
IMAGE_VERSION = "2026.11.0-test"
AMI_NAME = f"mlhpc-cpu-debian13-{IMAGE_VERSION}"
COMMON_PACKAGES = ["chrony", "ethtool", "numactl", "pciutils", "hwloc-nox"]


def make_image(*args, env):
    return run(["make", "-s", "-C", PACKER_DIR, "image", *args], env=env, timeout=1200)


def output(proc):
    return proc.stdout + proc.stderr


def run_playbook(*extra_vars, tmp_path):
    """The image playbook against localhost in check mode; it must stop at its first checks."""
    args = [VENV_BIN / "ansible-playbook", "--check", "-i", "localhost,", "-c", "local"]
    for ev in extra_vars:
        args += ["-e", ev]
    env = base_env(ANSIBLE_CONFIG=ROOT / "ansible.cfg", ANSIBLE_LOCALHOST_WARNING="false")
    return run([*args, ROOT / "playbooks" / "node_image.yml"], env=env, cwd=tmp_path)


# -- static ------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [PACKER_DIR, PACKER_DIR / "init"], ids=["packer", "packer/init"])
def test_templates_are_formatted(packer, directory):
    proc = run([packer, "fmt", "-check", directory])
    assert proc.returncode == 0, f"packer fmt would change: {output(proc)}"


@pytest.mark.parametrize("source", FLAVORS)
def test_template_validates_for_each_flavour(packer, source):
    proc = run([packer, "validate", f"-only=amazon-ebs.{source}", "-var", f"region={REGION}", PACKER_DIR])
    assert proc.returncode == 0, output(proc)


def test_plugin_requirements_stay_out_of_the_template_directory():
    # Packer 1.6 rejects required_plugins; modern Packer reads it with `packer init packer/init`.
    assert not [p for p in PACKER_DIR.glob("*.pkr.hcl") if "required_plugins" in p.read_text()]
    plugins = (PACKER_DIR / "init" / "required_plugins.pkr.hcl").read_text()
    assert 'source  = "github.com/hashicorp/amazon"' in plugins
    assert 'source  = "github.com/hashicorp/ansible"' in plugins


# -- bad input ---------------------------------------------------------------------------


def test_unknown_flavour_fails_naming_the_choices():
    proc = make_image("FLAVOR=tpu", f"AWS_REGION={REGION}", env=base_env())
    assert proc.returncode != 0
    assert "FLAVOR=tpu is not an image flavour" in proc.stderr
    assert f"set FLAVOR to one of: {' '.join(FLAVORS)}" in proc.stderr


def test_missing_flavour_fails_naming_the_choices():
    proc = make_image(f"AWS_REGION={REGION}", env=base_env())
    assert proc.returncode != 0
    assert "FLAVOR is not set" in proc.stderr


@pytest.mark.parametrize("flavor", ["tpu", None])
def test_playbook_rejects_an_unknown_flavour(tmp_path, flavor):
    extra = ['{"node_image_version": "1"}'] + ([f"flavor={flavor}"] if flavor else [])
    proc = run_playbook(*extra, tmp_path=tmp_path)
    assert proc.returncode != 0
    text = " ".join(output(proc).split())
    shown = flavor or "(not set)"
    choices = ", ".join(PLAYBOOK_FLAVORS)
    assert f"flavor is '{shown}'; set the extra variable flavor to one of {choices}" in text


def test_playbook_rejects_a_pin_no_role_installs(tmp_path):
    pins = json.dumps({"node_image_version": "1", "node_image_components": {"nvidia_driver": "535.183.01"}})
    proc = run_playbook("flavor=cpu", pins, tmp_path=tmp_path)
    assert proc.returncode != 0
    text = " ".join(output(proc).split())
    assert "node_image_components (the version manifest) pins nvidia_driver" in text
    assert "no role of flavour cpu installs" in text


def test_missing_region_fails_saying_what_to_set(packer, tmp_path):
    proc = run([packer, "validate", "-only=amazon-ebs.cpu", PACKER_DIR])
    assert proc.returncode != 0
    text = " ".join(output(proc).split())
    assert "The AWS region is not set: set AWS_REGION in the environment or pass -var region=<region>" in text
    made = make_image("FLAVOR=cpu", f"OUTPUT_DIR={tmp_path}", env=base_env())
    assert made.returncode != 0
    assert "set AWS_REGION" in made.stderr


def test_base_filter_matching_nothing_fails_saying_what_to_set(packer, ec2_emulator, tmp_path):
    proc = make_image(
        "FLAVOR=cpu",
        f"AWS_REGION={REGION}",
        f"OUTPUT_DIR={tmp_path}",
        "BASE_AMI_NAME=debian-99-amd64-*",
        f"BASE_AMI_OWNERS={ec2_emulator.base_ami['owner_id']}",
        env=base_env(**ec2_emulator.env()),
    )
    assert proc.returncode != 0
    assert "No AMI was found matching filters" in proc.stdout
    assert "the base image filter of cpu matches no image in the region" in proc.stderr
    assert "set BASE_AMI_NAME and BASE_AMI_OWNERS" in proc.stderr
    assert not ec2_emulator.client().describe_images(Owners=["self"])["Images"]


# -- an image build, end to end ------------------------------------------------------------


def _seed_build_state(host):
    """What a real build instance carries that hygiene must remove (or keep)."""
    host.sh(
        "mkdir -p /var/lib/cloud/instances/i-0123456789abcdef0 /var/lib/cloud/data"
        " /var/lib/cloud/seed/nocloud /home/builder"
        " && ln -sfn /var/lib/cloud/instances/i-0123456789abcdef0 /var/lib/cloud/instance"
        " && echo 'instance-id: i-0123' > /var/lib/cloud/seed/nocloud/meta-data"
        " && echo 'apt-get install secret-thing' > /root/.bash_history"
        " && echo 'import os' > /home/builder/.python_history"
        " && echo 'Cloud-init v. 25.1 running' > /var/log/cloud-init.log"
        " && echo 'old syslog' | gzip > /var/log/syslog.2.gz"
    )


def _ansible_seconds(log):
    """The playbook's run time from the profile_tasks callback (its last cumulative time)."""
    times = re.findall(r"\(\d+:\d\d:\d\d\.\d+\)\s+(\d+):(\d\d):(\d\d\.\d+)", log)
    assert times, "no profile_tasks timings in the build log"
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.fixture(scope="module")
def build(request, packer, ec2_emulator, build_host, tmp_path_factory):
    work = tmp_path_factory.mktemp("build")
    versions = work / "versions.json"
    versions.write_text(json.dumps({"node_image_version": IMAGE_VERSION, "node_image_components": {}}))
    _seed_build_state(build_host)
    args = [
        "FLAVOR=cpu",
        f"AWS_REGION={REGION}",
        f"VERSIONS={versions}",
        f"OUTPUT_DIR={work}",
        "BASE_AMI_NAME=debian-13-amd64-*",
        f"BASE_AMI_OWNERS={ec2_emulator.base_ami['owner_id']}",
    ]
    env = base_env(
        **ec2_emulator.env(),
        **build_host.packer_env(),
        PKR_VAR_os_label="debian13",
        PKR_VAR_root_device_name=ec2_emulator.base_ami["root_device_name"],
    )
    start = time.monotonic()
    proc = make_image(*args, env=env)
    seconds = time.monotonic() - start
    if proc.returncode == 0:
        ansible = _ansible_seconds(proc.stdout)
        request.config.stash.setdefault(TIMINGS, {})["cpu"] = (
            f"cpu image build: {seconds:.1f} s, of which the Ansible provisioner {ansible:.1f} s"
        )
    return {"proc": proc, "args": args, "env": env, "work": work, "seconds": seconds}


@pytest.fixture(scope="module")
def image(build, ec2_emulator):
    proc = build["proc"]
    assert proc.returncode == 0, f"the build failed:\n{output(proc)[-6000:]}"
    images = ec2_emulator.client().describe_images(Filters=[{"Name": "name", "Values": [AMI_NAME]}])["Images"]
    assert len(images) == 1, images
    return images[0]


@pytest.fixture(scope="module")
def host_manifest(image, build_host):
    return json.loads(build_host.sh("cat /etc/mlhpc/manifest.json").stdout)


def tags_of(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def test_image_is_registered_with_name_and_version_tags(image, ec2_emulator):
    tags = tags_of(image)
    assert tags["Name"] == AMI_NAME
    assert tags["mlhpc:flavor"] == "cpu"
    assert tags["mlhpc:source"] == "cpu"
    assert tags["mlhpc:image-version"] == IMAGE_VERSION
    assert tags["mlhpc:os"] == "debian13"
    assert tags["mlhpc:component:mlhpc.cluster"] == COLLECTION_VERSION
    assert tags["mlhpc:base-ami"] == ec2_emulator.base_ami["ami_id"]
    assert tags["mlhpc:base-ami-name"] == ec2_emulator.base_ami["name"]


def test_snapshots_carry_the_image_tags(image, ec2_emulator):
    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshot_ids
    snapshots = ec2_emulator.client().describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
    for snapshot in snapshots:
        assert tags_of(snapshot) == tags_of(image)


def test_tags_carry_what_the_host_manifest_records(image, host_manifest):
    tags = tags_of(image)
    component_tags = {k.removeprefix("mlhpc:component:"): v for k, v in tags.items() if "component:" in k}
    assert component_tags == host_manifest["components"]
    assert host_manifest["image"] == {
        "flavor": "cpu",
        "version": IMAGE_VERSION,
        "name": AMI_NAME,
        "source": "cpu",
        "build_time": tags["mlhpc:build-time"],
    }


def test_host_manifest_records_os_kernel_and_installed_packages(host_manifest, build_host):
    assert host_manifest["os"]["distribution"] == "Debian"
    assert host_manifest["os"]["release"] == "trixie"
    assert host_manifest["kernel"] == build_host.sh("uname -r").stdout.strip()
    assert host_manifest["components"] == {"mlhpc.cluster": COLLECTION_VERSION}
    for package in COMMON_PACKAGES:
        installed = build_host.sh(f"dpkg-query -W -f '${{Version}}' {package}").stdout
        assert host_manifest["packages"][package] == installed, package
    # The base image's own packages are not the build's.
    assert "systemd" not in host_manifest["packages"]


def test_host_has_what_the_common_role_installs(image, build_host):
    for package in COMMON_PACKAGES:
        status = build_host.sh(f"dpkg-query -W -f '${{db:Status-Status}}' {package}").stdout
        assert status == "installed", package
    assert build_host.sh("numactl --hardware").returncode == 0
    assert build_host.sh("dpkg-query -W unattended-upgrades", check=False).returncode != 0


def test_packer_manifest_names_the_image(image, build):
    manifest = json.loads((build["work"] / "packer-manifest.json").read_text())
    last = next(b for b in manifest["builds"] if b["packer_run_uuid"] == manifest["last_run_uuid"])
    assert last["artifact_id"] == f"{REGION}:{image['ImageId']}"
    assert last["custom_data"]["flavor"] == "cpu"
    assert last["custom_data"]["image_version"] == IMAGE_VERSION
    assert last["custom_data"]["ami_name"] == AMI_NAME


def test_hygiene_removed_the_build_state(image, build_host):
    sh = build_host.sh
    assert sh("stat -c %s /etc/machine-id").stdout.strip() == "0"
    assert sh("find /etc/ssh -name 'ssh_host_*'").stdout == ""
    # Package caches and lists.
    assert sh("find /var/cache/apt -name '*.deb' -o -name '*.bin'").stdout == ""
    assert sh("find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock").stdout == ""
    # cloud-init runs again at first boot; its seed stays.
    assert sh("ls -A /var/lib/cloud").stdout.split() == ["seed"]
    assert sh("cat /var/lib/cloud/seed/nocloud/meta-data").stdout.strip() == "instance-id: i-0123"
    # Histories.
    assert sh("ls -A /root /home/builder").stdout.count("history") == 0
    # Logs: rotated ones gone, the others empty, no persistent journal of the build.
    assert sh("find /var/log -type f \\( -name '*.gz' -o -name '*.[0-9]' \\)").stdout == ""
    assert sh("find /var/log -type f -size +0").stdout == ""
    assert sh("find /var/log/journal -mindepth 1").stdout == ""
    assert sh("test -f /var/log/dpkg.log && test -f /var/log/cloud-init.log").returncode == 0


def test_hygiene_is_idempotent_and_check_mode_clean(image, build_host, tmp_path):
    play = [
        {
            "name": "Hygiene again on the captured host",
            "hosts": "all",
            "gather_facts": False,
            "roles": [
                {"role": "mlhpc.cluster.manifest"},
                {"role": "mlhpc.cluster.image_hygiene", "image_hygiene_authorized_keys_users": ["root"]},
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    before = build_host.sh("cat /etc/mlhpc/manifest.json").stdout
    # The host has no SSH host keys any more: podman's connection reaches it.
    env = base_env(ANSIBLE_CONFIG=ROOT / "ansible.cfg", ANSIBLE_NOCOLOR="1")
    for mode in (["--check", "--diff"], []):
        proc = run(
            [
                VENV_BIN / "ansible-playbook", *mode,
                "-i", f"{build_host.name},", "-c", "containers.podman.podman",
                "-e", "ansible_python_interpreter=/usr/bin/python3",
                tmp_path / "play.yml",
            ],
            env=env,
            cwd=tmp_path,
        )  # fmt: skip
        recap = re.search(r"ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
        assert proc.returncode == 0 and recap, output(proc)
        assert recap.groups() == ("0", "0", "0"), f"{mode or 'run'}:\n{proc.stdout[-4000:]}"
    assert build_host.sh("cat /etc/mlhpc/manifest.json").stdout == before


def test_second_build_of_the_same_version_fails_clearly(image, build, ec2_emulator):
    proc = make_image(*build["args"], env=build["env"])
    assert proc.returncode != 0
    assert f"AMI Name: '{AMI_NAME}' is used by an existing AMI" in proc.stdout
    assert "an image of this flavour and version exists already" in proc.stderr
    assert "raise node_image_version" in proc.stderr
    images = ec2_emulator.client().describe_images(Filters=[{"Name": "name", "Values": [AMI_NAME]}])["Images"]
    assert [i["ImageId"] for i in images] == [image["ImageId"]]


def test_host_keys_come_back_when_sshd_starts(image, build_host):
    # Last: it changes the host. Without cloud-init, the image's own unit makes the keys.
    assert build_host.sh("systemctl is-enabled mlhpc-ssh-host-keys.service").stdout.strip() == "enabled"
    build_host.sh("systemctl restart ssh")
    assert build_host.sh("ls /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub").returncode == 0
    login = run(
        [
            "ssh", "-i", build_host.key, "-p", build_host.port, "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ControlPath=none", "root@127.0.0.1", "true",
        ],
        timeout=60,
    )  # fmt: skip
    assert login.returncode == 0, output(login)
