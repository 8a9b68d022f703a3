"""Network code: teachers, students, losses and anomaly maps. Nothing here knows about serving."""
