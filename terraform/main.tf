locals {
  apis = [
    "artifactregistry.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "redis.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}

# Container images of the services (one image; the Deployments choose the entry point).
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = "ogp"
  format        = "DOCKER"
  description   = "One Gate Payment container images"
  labels        = var.labels

  depends_on = [google_project_service.apis]
}
