variable "project_id" {
  description = "GCP project that hosts One Gate Payment."
  type        = string
}

variable "region" {
  description = "Region of every resource (data stays in Indonesia)."
  type        = string
  default     = "asia-southeast2"
}

variable "cluster_name" {
  description = "Kubernetes cluster name, as in the operations document."
  type        = string
  default     = "ocp-one-gate-payment"
}

variable "worker_zones" {
  description = "Zones of the worker node pool; workers_per_zone nodes are created in each."
  type        = list(string)
  default     = ["asia-southeast2-a", "asia-southeast2-b"]
}

variable "workers_per_zone" {
  description = "Worker nodes per zone (2 zones x 1 = the document's 2 workers)."
  type        = number
  default     = 1
}

variable "worker_machine_type" {
  description = "Machine type of the workers (they also host Kafka, Kong and the monitoring stack)."
  type        = string
  default     = "e2-standard-8"
}

variable "master_authorized_networks" {
  description = "CIDRs allowed to reach the Kubernetes API endpoint (office VPN, CI runners)."
  type = list(object({
    name = string
    cidr = string
  }))
  default = []
}

variable "subnet_cidr" {
  description = "Primary range of the cluster subnet (nodes)."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pods (also OGP_TRUSTED_PROXIES: Kong runs as a pod)."
  type        = string
  default     = "10.20.0.0/16"
}

variable "services_cidr" {
  description = "Secondary range for Kubernetes services."
  type        = string
  default     = "10.30.0.0/20"
}

variable "master_cidr" {
  description = "/28 range for the private control plane."
  type        = string
  default     = "172.16.0.0/28"
}

variable "private_services_cidr" {
  description = "Range peered to Google services (Cloud SQL, Memorystore); the NetworkPolicies allow egress to it."
  type        = string
  default     = "10.40.0.0/16"
}

variable "db_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-2-8192"
}

variable "db_disk_size_gb" {
  description = "Initial Cloud SQL disk size (grows automatically)."
  type        = number
  default     = 50
}

variable "db_max_connections" {
  description = "PostgreSQL max_connections: pods x (pool_size 10 + max_overflow 20) must fit below it."
  type        = number
  default     = 500
}

variable "redis_memory_gb" {
  description = "Memorystore capacity (rate limits and login throttling only: small)."
  type        = number
  default     = 1
}

variable "labels" {
  description = "Labels put on every resource that takes them."
  type        = map(string)
  default = {
    system = "one-gate-payment"
  }
}
