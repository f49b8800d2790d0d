terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.30"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds generated credentials (database password, Redis AUTH string): keep it in a private,
  # versioned GCS bucket. Configure at init: terraform init -backend-config="bucket=<bucket>"
  backend "gcs" {
    prefix = "one-gate-payment/terraform"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
