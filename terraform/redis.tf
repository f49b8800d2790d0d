# Memorystore for Redis: login throttling and partner rate limits. AUTH and TLS on, private access only.

resource "google_redis_instance" "cache" {
  name                    = "${var.cluster_name}-redis"
  region                  = var.region
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.redis_memory_gb
  redis_version           = "REDIS_7_2"
  authorized_network      = google_compute_network.vpc.id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  labels                  = var.labels

  depends_on = [google_service_networking_connection.private_services]
}
