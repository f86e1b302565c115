# Settings every image shares. The build block (build.pkr.hcl) names one source per
# flavour and base and adds what differs: base image filter, name, tags, instance type.

source "amazon-ebs" "node" {
  region                  = var.region
  custom_endpoint_ec2     = var.ec2_endpoint
  ami_regions             = var.ami_regions
  ami_description         = "mlhpc.cluster training node image ${local.image_version}"
  ami_virtualization_type = "hvm"
  ena_support             = true
  sriov_support           = true
  encrypt_boot            = var.encrypt_boot
  kms_key_id              = var.kms_key_id

  subnet_id          = var.subnet_id
  security_group_ids = var.security_group_ids

  ssh_username         = var.ssh_username
  ssh_interface        = var.ssh_interface
  ssh_host             = var.ssh_host
  ssh_port             = var.ssh_port
  ssh_keypair_name     = var.ssh_keypair_name
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"

  launch_block_device_mappings {
    device_name           = var.root_device_name
    volume_size           = var.volume_size
    volume_type           = "gp3"
    iops                  = var.volume_iops
    throughput            = var.volume_throughput
    delete_on_termination = true
  }
}
