# One source per image: build one with -only=amazon-ebs.<source> (packer/Makefile: FLAVOR).

build {
  source "amazon-ebs.node" {
    name          = "gpu"
    ami_name      = local.ami_name["gpu"]
    instance_type = local.instance_type["gpu"]
    tags          = local.image_tags["gpu"]
    snapshot_tags = local.image_tags["gpu"]
    run_tags      = local.run_tags["gpu"]

    source_ami_filter {
      filters     = { name = local.base["gpu"].name, state = "available", architecture = "x86_64" }
      owners      = local.base["gpu"].owners
      most_recent = true
    }
  }

  source "amazon-ebs.node" {
    name          = "gpu-dlami"
    ami_name      = local.ami_name["gpu-dlami"]
    instance_type = local.instance_type["gpu-dlami"]
    tags          = local.image_tags["gpu-dlami"]
    snapshot_tags = local.image_tags["gpu-dlami"]
    run_tags      = local.run_tags["gpu-dlami"]

    source_ami_filter {
      filters     = { name = local.base["gpu-dlami"].name, state = "available", architecture = "x86_64" }
      owners      = local.base["gpu-dlami"].owners
      most_recent = true
    }
  }

  source "amazon-ebs.node" {
    name          = "neuron"
    ami_name      = local.ami_name["neuron"]
    instance_type = local.instance_type["neuron"]
    tags          = local.image_tags["neuron"]
    snapshot_tags = local.image_tags["neuron"]
    run_tags      = local.run_tags["neuron"]

    source_ami_filter {
      filters     = { name = local.base["neuron"].name, state = "available", architecture = "x86_64" }
      owners      = local.base["neuron"].owners
      most_recent = true
    }
  }

  source "amazon-ebs.node" {
    name          = "cpu"
    ami_name      = local.ami_name["cpu"]
    instance_type = local.instance_type["cpu"]
    tags          = local.image_tags["cpu"]
    snapshot_tags = local.image_tags["cpu"]
    run_tags      = local.run_tags["cpu"]

    source_ami_filter {
      filters     = { name = local.base["cpu"].name, state = "available", architecture = "x86_64" }
      owners      = local.base["cpu"].owners
      most_recent = true
    }
  }

  source "amazon-ebs.node" {
    name          = "pcluster"
    ami_name      = local.ami_name["pcluster"]
    instance_type = local.instance_type["pcluster"]
    tags          = local.image_tags["pcluster"]
    snapshot_tags = local.image_tags["pcluster"]
    run_tags      = local.run_tags["pcluster"]

    source_ami_filter {
      filters     = { name = local.base["pcluster"].name, state = "available", architecture = "x86_64" }
      owners      = local.base["pcluster"].owners
      most_recent = true
    }
  }

  # The roles' install entry points for the flavour, the image manifest, then hygiene
  # (package caches, cloud-init state, machine-id, host keys, logs, shell history).
  provisioner "ansible" {
    playbook_file = "${local.repo_root}/playbooks/node_image.yml"
    # Ansible connects to the instance itself (ssh_host/ssh_port), not through
    # Packer's SSH proxy, which offers only ssh-rsa host keys.
    use_proxy = false
    extra_arguments = concat([
      "--extra-vars", "flavor=${local.flavor[source.name]}",
      "--extra-vars", "@${local.version_manifest}",
      "--extra-vars", jsonencode({
        node_image_name       = local.ami_name[source.name]
        node_image_source     = source.name
        node_image_build_time = local.build_time
      }),
    ], var.ansible_extra_arguments)
    ansible_env_vars = [
      "ANSIBLE_CONFIG=${local.ansible_config}",
      "ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks",
      "ANSIBLE_FORCE_COLOR=0",
    ]
  }

  post-processor "manifest" {
    output     = "${local.output_dir}/packer-manifest.json"
    strip_path = true
    custom_data = {
      flavor        = local.flavor[source.name]
      image_version = local.image_version
      ami_name      = local.ami_name[source.name]
      build_time    = local.build_time
    }
  }
}
