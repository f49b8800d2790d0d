from ogp.midtrans_sim.app import main

main()
