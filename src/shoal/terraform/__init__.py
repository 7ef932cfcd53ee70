"""`shoal apply` / `shoal destroy`: Terraform for the AWS provider, run against shoal.

A client of a running shoal server, as Terraform is a client of AWS: it reads
the HCL (`hcl`), evaluates it (`expressions`, `functions`, `scope`, with
`stubs` standing in for what shoal does not run), compares each Batch and
EventBridge resource with what the server describes (`batch`, `events`) and
makes the API calls (`plan`). AWS names are unique, so resources are found
by name: there is no state file.
"""
