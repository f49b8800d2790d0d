from infra.midtrans_sim.app import main

main()
