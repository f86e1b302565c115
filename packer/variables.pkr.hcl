# Inputs of the node image builds. Set them with -var, -var-file or PKR_VAR_<name> in
# the environment; packer/Makefile maps its make variables onto them.

variable "region" {
  type        = string
  default     = env("AWS_REGION")
  description = "AWS region the image is built in. Defaults to AWS_REGION."

  validation {
    condition     = length(var.region) > 0
    error_message = "The AWS region is not set: set AWS_REGION in the environment or pass -var region=<region>, e.g. us-east-1."
  }
}

variable "version_manifest" {
  type        = string
  default     = ""
  description = "JSON file with node_image_version and the pinned node_image_components. Empty means packer/versions.json."
}

variable "instance_type" {
  type        = string
  default     = ""
  description = "Instance type of the build instance. Empty picks one per flavour (see locals)."
}

variable "ubuntu_release" {
  type        = string
  default     = "22.04"
  description = "Ubuntu release of the default base images: 22.04 or 24.04."

  validation {
    condition     = contains(["22.04", "24.04"], var.ubuntu_release)
    error_message = "The ubuntu_release variable must be 22.04 or 24.04."
  }
}

variable "base_ami_name" {
  type        = string
  default     = ""
  description = "Name filter (wildcards allowed) of the base image. Empty uses the default of the source."
}

variable "base_ami_owners" {
  type        = list(string)
  default     = []
  description = "Owners (account IDs, aliases or self) of the base image. Empty uses the default of the source."
}

variable "os_label" {
  type        = string
  default     = ""
  description = "OS part of the image name and the mlhpc:os tag. Empty means ubuntu<ubuntu_release>."
}

variable "pcluster_version" {
  type        = string
  default     = "3.14.2"
  description = "AWS ParallelCluster version of the base image of the pcluster source; clusters of that version only can use the image."
}

variable "pcluster_flavor" {
  type        = string
  default     = "gpu"
  description = "Flavour baked into the pcluster source: gpu or cpu."

  validation {
    condition     = contains(["gpu", "cpu"], var.pcluster_flavor)
    error_message = "The pcluster_flavor variable must be gpu or cpu."
  }
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build instance. Empty uses the default VPC."
}

variable "security_group_ids" {
  type        = list(string)
  default     = []
  description = "Security groups of the build instance. Empty creates a temporary one that allows SSH."
}

variable "ssh_interface" {
  type        = string
  default     = ""
  description = "How Packer reaches the instance: public_ip (empty), private_ip, public_dns, private_dns or session_manager."
}

variable "volume_size" {
  type        = number
  default     = 100
  description = "Root volume size in GiB."
}

variable "volume_iops" {
  type        = number
  default     = 3000
  description = "Provisioned IOPS of the gp3 root volume."
}

variable "volume_throughput" {
  type        = number
  default     = 250
  description = "Throughput of the gp3 root volume in MiB/s."
}

variable "root_device_name" {
  type        = string
  default     = "/dev/sda1"
  description = "Root device name of the base image (/dev/sda1 on Ubuntu, DLAMI and ParallelCluster Ubuntu images)."
}

variable "encrypt_boot" {
  type        = bool
  default     = false
  description = "Encrypt the image's snapshots (with kms_key_id, or the account's default key)."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key for encrypt_boot. Empty uses the default EBS key."
}

variable "ami_name_prefix" {
  type        = string
  default     = "mlhpc"
  description = "First part of the image name: <prefix>-<source>-<os_label>-<image version>."
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "Further regions the finished image is copied to."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for the image, its snapshots and the build instance."
}

variable "ssh_username" {
  type        = string
  default     = "ubuntu"
  description = "Login user of the base image."
}

variable "ssh_host" {
  type        = string
  default     = ""
  description = "Address to reach the build instance at instead of the one from ssh_interface (a bastion port forward, a test host)."
}

variable "ssh_port" {
  type        = number
  default     = 22
  description = "SSH port of the build instance."
}

variable "ssh_keypair_name" {
  type        = string
  default     = ""
  description = "Existing EC2 key pair for the build instance (with ssh_private_key_file). Empty creates a temporary key pair."
}

variable "ssh_private_key_file" {
  type        = string
  default     = ""
  description = "Private key for ssh_keypair_name, or for a key already in the base image when ssh_keypair_name is empty."
}

variable "ec2_endpoint" {
  type        = string
  default     = ""
  description = "EC2 API endpoint URL. Empty uses the region's public endpoint."
}

variable "output_dir" {
  type        = string
  default     = ""
  description = "Directory of the Packer manifest (packer-manifest.json). Empty means packer/output."
}

variable "ansible_config" {
  type        = string
  default     = ""
  description = "ansible.cfg used by the provisioner. Empty uses the collection checkout's ansible.cfg."
}

variable "ansible_extra_arguments" {
  type        = list(string)
  default     = []
  description = "Further ansible-playbook arguments, e.g. [\"-v\"] or [\"--extra-vars\", \"@site-image.yml\"]."
}
