# Plugins of the node image templates, for Packer 1.7 and later:
#   packer init packer/init && packer build -only=amazon-ebs.<source> packer
# Packer loads every *.pkr.hcl of a directory; this block lives apart so that Packer
# 1.6 (builders built in, no `packer init`) can still validate and build packer/.

packer {
  required_version = ">= 1.10.0"

  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = ">= 1.1.0"
    }
  }
}
