# The document's OpenShift cluster, as a private regional GKE cluster (see README.md for the mapping).

resource "google_service_account" "nodes" {
  account_id   = "ogp-gke-nodes"
  display_name = "One Gate Payment GKE nodes"
}

# Least privilege for nodes: write logs and metrics, pull our images; nothing else.
resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  name     = var.cluster_name
  location = var.region # regional: Google runs a replicated control plane across the region's zones

  network         = google_compute_network.vpc.id
  subnetwork      = google_compute_subnetwork.cluster.id
  networking_mode = "VPC_NATIVE"

  # Workers come from the node pool below.
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection = true

  release_channel {
    channel = "REGULAR"
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false # reachable only from master_authorized_networks
    master_ipv4_cidr_block  = var.master_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        display_name = cidr_blocks.value.name
        cidr_block   = cidr_blocks.value.cidr
      }
    }
  }

  # Dataplane V2 enforces the NetworkPolicies in infra/kubernetes.
  datapath_provider = "ADVANCED_DATAPATH"

  # Pods get Google identities per Kubernetes service account (External Secrets reads Secret Manager this way).
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  enable_shielded_nodes = true

  resource_labels = var.labels

  depends_on = [google_project_service.apis]
}

resource "google_container_node_pool" "workers" {
  name           = "workers"
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = var.worker_zones
  node_count     = var.workers_per_zone # per zone

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.worker_machine_type
    disk_type       = "pd-balanced"
    disk_size_gb    = 100
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = var.labels

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }
  }
}
