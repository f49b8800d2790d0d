output "cluster_name" {
  description = "GKE cluster name."
  value       = google_container_cluster.this.name
}

output "get_credentials" {
  description = "Command that configures kubectl for the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${var.region} --project ${var.project_id}"
}

output "nat_egress_ip" {
  description = "Fixed outbound address of the cluster (for Midtrans / partner allow-lists)."
  value       = google_compute_address.nat.address
}

output "private_services_cidr" {
  description = "Range of Cloud SQL and Memorystore: the egress NetworkPolicies allow it."
  value       = var.private_services_cidr
}

output "pods_cidr" {
  description = "Pod range: set OGP_TRUSTED_PROXIES to it (Kong runs as a pod)."
  value       = var.pods_cidr
}

output "postgres_private_ip" {
  description = "Private IP of the Cloud SQL instance."
  value       = google_sql_database_instance.postgres.private_ip_address
}

output "postgres_connection_name" {
  description = "Cloud SQL connection name (project:region:instance)."
  value       = google_sql_database_instance.postgres.connection_name
}

output "redis_host" {
  description = "Memorystore host and TLS port."
  value       = "${google_redis_instance.cache.host}:${google_redis_instance.cache.port}"
}

output "image_repository" {
  description = "Artifact Registry path for the service image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/one-gate-payment"
}

output "secret_reader_service_account" {
  description = "Google service account that External Secrets impersonates (annotate the KSA ogp-secret-reader)."
  value       = google_service_account.secret_reader.email
}

output "operator_secret_ids" {
  description = "Secrets whose values an operator must add (gcloud secrets versions add)."
  value       = keys(google_secret_manager_secret.operator)
}
