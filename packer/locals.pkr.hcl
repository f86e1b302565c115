# Per-source settings. A source is a flavour on a base image: the flavour picks the roles
# (playbooks/node_image.yml), the base the image it starts from.
#
# The locals come in blocks, one per level of dependency: Packer 1.6 evaluates the locals
# of a block in random order and gives up on long chains within one block.

locals {
  # Absolute paths: Packer resolves file() against the template directory, Ansible
  # against the working directory. Paths given in variables are relative to the latter.
  repo_root        = abspath("${path.root}/..")
  output_dir       = abspath(var.output_dir != "" ? var.output_dir : "${path.root}/output")
  version_manifest = abspath(var.version_manifest != "" ? var.version_manifest : "${path.root}/versions.json")
  build_time       = timestamp()
  os_label         = var.os_label != "" ? var.os_label : "ubuntu${var.ubuntu_release}"
  ubuntu_compact   = replace(var.ubuntu_release, ".", "")
  ubuntu_codename  = { "22.04" = "jammy", "24.04" = "noble" }[var.ubuntu_release]
  ubuntu_disk      = { "22.04" = "hvm-ssd", "24.04" = "hvm-ssd-gp3" }[var.ubuntu_release]

  # Source name -> flavour of the image playbook.
  flavor = {
    gpu         = "gpu"
    "gpu-dlami" = "gpu"
    neuron      = "neuron"
    cpu         = "cpu"
    pcluster    = var.pcluster_flavor
  }

  default_instance_type = {
    gpu    = "g5.2xlarge"
    neuron = "trn1.2xlarge"
    cpu    = "c6i.2xlarge"
  }
}

locals {
  ansible_config = var.ansible_config != "" ? abspath(var.ansible_config) : "${local.repo_root}/ansible.cfg"

  # The version manifest is also the provisioner's extra-vars file: one file pins the
  # versions the roles install, the tags, and what /etc/mlhpc/manifest.json records.
  versions           = jsondecode(file(local.version_manifest))
  collection_version = yamldecode(file("${local.repo_root}/galaxy.yml")).version

  canonical_ubuntu = {
    name   = "ubuntu/images/${local.ubuntu_disk}/ubuntu-${local.ubuntu_codename}-${var.ubuntu_release}-amd64-server-*"
    owners = ["099720109477"]
  }

  # Custom ParallelCluster images must start from an official image of the same version,
  # and carry these tags.
  pcluster_tags = {
    "parallelcluster:version" = var.pcluster_version
    "parallelcluster:os"      = "ubuntu${local.ubuntu_compact}"
  }

  instance_type = {
    for s, f in local.flavor : s => var.instance_type != "" ? var.instance_type : local.default_instance_type[f]
  }
}

locals {
  image_version = local.versions.node_image_version
  components    = merge({ "mlhpc.cluster" = local.collection_version }, lookup(local.versions, "node_image_components", {}))

  default_base = {
    gpu = local.canonical_ubuntu
    "gpu-dlami" = {
      name   = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu ${var.ubuntu_release}) *"
      owners = ["amazon"]
    }
    neuron = local.canonical_ubuntu
    cpu    = local.canonical_ubuntu
    pcluster = {
      name   = "aws-parallelcluster-${var.pcluster_version}-ubuntu-${local.ubuntu_compact}-lts-hvm-x86_64-*"
      owners = ["247102896272"]
    }
  }
}

locals {
  base = {
    for s, b in local.default_base : s => {
      name   = var.base_ami_name != "" ? var.base_ami_name : b.name
      owners = length(var.base_ami_owners) > 0 ? var.base_ami_owners : b.owners
    }
  }

  # Image names are release identifiers: building a version twice fails instead of
  # shadowing the first image. Bump node_image_version in the version manifest.
  ami_name = {
    for s, f in local.flavor : s => "${var.ami_name_prefix}-${s}-${local.os_label}-${local.image_version}"
  }

  component_tags = { for c, v in local.components : "mlhpc:component:${c}" => v }
}

locals {
  image_tags = {
    for s, f in local.flavor : s => merge(
      var.tags,
      local.component_tags,
      s == "pcluster" ? local.pcluster_tags : {},
      {
        Name                  = local.ami_name[s]
        "mlhpc:flavor"        = f
        "mlhpc:source"        = s
        "mlhpc:image-version" = local.image_version
        "mlhpc:os"            = local.os_label
        "mlhpc:build-time"    = local.build_time
        "mlhpc:base-ami"      = "{{ .SourceAMI }}"
        "mlhpc:base-ami-name" = "{{ .SourceAMIName }}"
      },
    )
  }

  run_tags = {
    for s, f in local.flavor : s => merge(var.tags, {
      Name                  = "packer ${local.ami_name[s]}"
      "mlhpc:flavor"        = f
      "mlhpc:image-version" = local.image_version
    })
  }
}
