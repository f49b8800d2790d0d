# PostgreSQL 15 for the ledger and read models: private IP only, TLS only, HA, daily backups and PITR.

resource "google_sql_database_instance" "postgres" {
  name                = "${var.cluster_name}-pg15"
  database_version    = "POSTGRES_15"
  region              = var.region
  deletion_protection = true

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = "REGIONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = true
    user_labels                 = var.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.vpc.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "18:00" # 01:00 WIB
      location                       = var.region
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 30
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7  # Sunday
      hour         = 19 # 02:00 WIB
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "max_connections"
      value = tostring(var.db_max_connections)
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "ogp" {
  name     = "one_gate_payment"
  instance = google_sql_database_instance.postgres.name
}

# Generated, never written in code; it lives in the (private) state and in Secret Manager.
resource "random_password" "db" {
  length  = 32
  special = false
}

resource "google_sql_user" "ogp" {
  name     = "ogp"
  instance = google_sql_database_instance.postgres.name
  password = random_password.db.result
}
